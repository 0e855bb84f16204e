package identity

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reason says why an identity request was refused.
type Reason string

// Refusal reasons (ARCHITECTURE.md section 5).
const (
	ReasonWrongAudience       Reason = "WrongAudience"
	ReasonExpiredToken        Reason = "ExpiredToken"
	ReasonUnboundToken        Reason = "UnboundToken"
	ReasonWrongServiceAccount Reason = "WrongServiceAccount"
	ReasonForeignResource     Reason = "ForeignResource"
	ReasonMalformedCSR        Reason = "MalformedCSR"
	ReasonBadSignature        Reason = "BadSignature"
	ReasonSANMismatch         Reason = "SANMismatch"
	ReasonForbiddenSAN        Reason = "ForbiddenSAN"
	ReasonCARequested         Reason = "CARequested"
	ReasonWrongKeyUsage       Reason = "WrongKeyUsage"
	ReasonWeakKey             Reason = "WeakKey"
)

// codesByReason maps each refusal to the gRPC code a client sees: who the caller is cannot be
// established (Unauthenticated), the caller may not have what it asks for (PermissionDenied), or
// the request itself is wrong (InvalidArgument).
var codesByReason = map[Reason]codes.Code{
	ReasonWrongAudience:       codes.Unauthenticated,
	ReasonExpiredToken:        codes.Unauthenticated,
	ReasonUnboundToken:        codes.Unauthenticated,
	ReasonWrongServiceAccount: codes.PermissionDenied,
	ReasonForeignResource:     codes.PermissionDenied,
	ReasonSANMismatch:         codes.PermissionDenied,
	ReasonMalformedCSR:        codes.InvalidArgument,
	ReasonBadSignature:        codes.InvalidArgument,
	ReasonForbiddenSAN:        codes.InvalidArgument,
	ReasonCARequested:         codes.InvalidArgument,
	ReasonWrongKeyUsage:       codes.InvalidArgument,
	ReasonWeakKey:             codes.InvalidArgument,
}

// Refusal is a typed refusal of an identity request; its message says what to fix.
type Refusal struct {
	Reason  Reason
	Message string
}

func refuse(reason Reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func (r *Refusal) Error() string { return string(r.Reason) + ": " + r.Message }

// Code is the gRPC code of the refusal.
func (r *Refusal) Code() codes.Code {
	if code, ok := codesByReason[r.Reason]; ok {
		return code
	}
	return codes.Internal
}

// GRPCStatus lets gRPC send the refusal with its code (status.FromError finds it).
func (r *Refusal) GRPCStatus() *status.Status { return status.New(r.Code(), r.Error()) }
