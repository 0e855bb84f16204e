package controlplane

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"
)

func wantLimit(t *testing.T, err error, reason string) {
	t.Helper()
	var limit *limitError
	if !errors.As(err, &limit) || limit.reason != reason {
		t.Fatalf("got %v, want a %s limit", err, reason)
	}
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != reason+": "+limit.message {
		t.Fatalf("the caller is told %s %q, want ResourceExhausted with the reason first", st.Code(), st.Message())
	}
}

func TestAdmissionLimitsUnauthenticatedStreams(t *testing.T) {
	a := newAdmission(2, 3)
	var releases []func()
	for _, peer := range []string{"10.0.0.1", "10.0.0.1", "10.0.0.2"} {
		release, err := a.enter(peer)
		if err != nil {
			t.Fatalf("stream from %s refused under the limits: %v", peer, err)
		}
		releases = append(releases, release)
	}
	_, err := a.enter("10.0.0.1")
	wantLimit(t, err, reasonPeerStreamLimit)
	_, err = a.enter("10.0.0.3")
	wantLimit(t, err, reasonStreamLimit)

	// Releasing twice frees one place only.
	releases[0]()
	releases[0]()
	release, err := a.enter("10.0.0.1")
	if err != nil {
		t.Fatalf("a released place was not free again: %v", err)
	}
	_, err = a.enter("10.0.0.3")
	wantLimit(t, err, reasonStreamLimit)
	release()
	releases[1]()
	releases[2]()
	if a.total != 0 || len(a.perPeer) != 0 {
		t.Fatalf("after every release: total %d, peers %v", a.total, a.perPeer)
	}
}

func TestPeerReviewLimiterGivesEachPeerItsShare(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1800000000, 0))
	l := newPeerReviewLimiter(2, 3, clock)
	for range 3 {
		if err := l.allow("10.0.0.1"); err != nil {
			t.Fatalf("refused within the burst: %v", err)
		}
	}
	wantLimit(t, l.allow("10.0.0.1"), reasonPeerTokenReviewLimit)
	if err := l.allow("10.0.0.2"); err != nil {
		t.Fatalf("another peer was refused: %v", err)
	}
	clock.Step(500 * time.Millisecond) // 2 per second: one more
	if err := l.allow("10.0.0.1"); err != nil {
		t.Fatalf("refused after the bucket refilled: %v", err)
	}
	wantLimit(t, l.allow("10.0.0.1"), reasonPeerTokenReviewLimit)
}

func TestPeerRefusalBudgetIsSpentByRefusalsOnly(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1800000000, 0))
	b := newPeerRefusalBudget(2, 3, clock)
	if b.spent("10.0.0.1") {
		t.Fatal("a peer never refused has spent its budget")
	}
	for range 2 {
		b.charge("10.0.0.1")
	}
	// Looking does not spend: a peer is refused in the transport only once its budget is gone.
	for range 10 {
		if b.spent("10.0.0.1") {
			t.Fatal("two refusals of a budget of three spent it")
		}
	}
	b.charge("10.0.0.1")
	if !b.spent("10.0.0.1") {
		t.Fatal("three refusals of a budget of three did not spend it")
	}
	if b.spent("10.0.0.2") {
		t.Fatal("another peer's budget was spent")
	}
	clock.Step(500 * time.Millisecond) // 2 per second: one more
	if b.spent("10.0.0.1") {
		t.Fatal("the budget did not refill")
	}
	b.charge("10.0.0.1")
	if !b.spent("10.0.0.1") {
		t.Fatal("a refusal after the refill did not spend it again")
	}
	clock.Step(time.Hour)
	for range 3 {
		if b.spent("10.0.0.1") {
			t.Fatal("the budget was not full again after an hour")
		}
		b.charge("10.0.0.1")
	}
	if !b.spent("10.0.0.1") {
		t.Fatal("the refilled budget held more than its burst")
	}
}
