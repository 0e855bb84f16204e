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

	// Reasons of the control-plane server (docs/control-plane.md).
	ReasonMissingToken     Reason = "MissingToken"
	ReasonInvalidToken     Reason = "InvalidToken"
	ReasonPodNotFound      Reason = "PodNotFound"
	ReasonPodTerminating   Reason = "PodTerminating"
	ReasonNotInjected      Reason = "NotInjected"
	ReasonWrongPod         Reason = "WrongPod"
	ReasonMalformedRequest Reason = "MalformedRequest"
	ReasonUnsupportedType  Reason = "UnsupportedType"
)

// codesByReason maps each refusal to the gRPC code a client sees: who the caller is cannot be
// established (Unauthenticated, also when the token outlived the pod it was bound to), the caller
// may not have what it asks for (PermissionDenied), the request itself is wrong
// (InvalidArgument), or it asks for a kind of resource the server does not serve (Unimplemented).
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
	ReasonMissingToken:        codes.Unauthenticated,
	ReasonInvalidToken:        codes.Unauthenticated,
	ReasonPodNotFound:         codes.Unauthenticated,
	ReasonPodTerminating:      codes.PermissionDenied,
	ReasonNotInjected:         codes.PermissionDenied,
	ReasonWrongPod:            codes.PermissionDenied,
	ReasonMalformedRequest:    codes.InvalidArgument,
	ReasonUnsupportedType:     codes.Unimplemented,
}

// Refusal is a typed refusal of an identity request; its message says what to fix.
type Refusal struct {
	Reason  Reason
	Message string
}

// Refuse builds a Refusal whose message is formatted like fmt.Sprintf.
func Refuse(reason Reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func refuse(reason Reason, format string, args ...any) *Refusal {
	return Refuse(reason, format, args...)
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
