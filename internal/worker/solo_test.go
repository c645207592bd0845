package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// notYet fails if ch is closed within a short while (a negative check: nothing should
// release the waiter until the test does).
func notYet(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s too early", what)
	case <-time.After(50 * time.Millisecond):
	}
}

func closedWithin(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never happened", what)
	}
}

func TestSoloGateTurnWaitsUntilNothingElseIsHeld(t *testing.T) {
	g := newSoloGate()
	ctx := context.Background()
	require.True(t, g.enterPull(ctx)) // a pull under way
	g.add(3)                          // it brought 3 messages, one of them a last chance
	g.done(1)                         // the pull returned

	var end func()
	got := make(chan struct{})
	go func() { end, _ = g.turn(ctx); close(got) }()
	notYet(t, got, "turn with 2 other messages held")

	// New pulls wait while a last chance waits.
	pulled := make(chan struct{})
	go func() {
		if g.enterPull(ctx) {
			close(pulled)
		}
	}()
	notYet(t, pulled, "pull while a last chance waits")

	g.done(1)
	notYet(t, got, "turn with 1 other message held")
	g.done(1)
	closedWithin(t, got, "turn once nothing else is held")
	require.NotNil(t, end)
	require.Equal(t, 1, g.heldNow(), "the last chance's own message is held again")
	notYet(t, pulled, "pull while a last chance runs")

	g.done(1) // its attempt settled the message
	end()
	closedWithin(t, pulled, "pull after the turn ended")
	end() // a second end changes nothing
	g.done(1)
	require.Zero(t, g.heldNow())
}

func TestSoloGateOneTurnAtATime(t *testing.T) {
	g := newSoloGate()
	ctx := context.Background()
	g.add(2) // two last chances pulled together
	first, second := make(chan func(), 1), make(chan func(), 1)
	go func() { e, _ := g.turn(ctx); first <- e }()
	go func() { e, _ := g.turn(ctx); second <- e }()

	// Each waits for the other to leave held; one gets the turn, the other waits for it.
	var endA func()
	var other chan func()
	select {
	case endA = <-first:
		other = second
	case endA = <-second:
		other = first
	case <-time.After(5 * time.Second):
		t.Fatal("neither last chance got a turn")
	}
	require.NotNil(t, endA)
	select {
	case <-other:
		t.Fatal("two last chances ran at once")
	case <-time.After(50 * time.Millisecond):
	}
	g.done(1) // A's attempt ended
	endA()
	select {
	case endB := <-other:
		require.NotNil(t, endB)
		g.done(1)
		endB()
	case <-time.After(5 * time.Second):
		t.Fatal("the second last chance never got its turn")
	}
	require.Zero(t, g.heldNow())
}

func TestSoloGateTurnGivesUpWhenStopping(t *testing.T) {
	g := newSoloGate()
	ctx, cancel := context.WithCancel(context.Background())
	g.add(2)
	got := make(chan func(), 1)
	go func() { e, _ := g.turn(ctx); got <- e }()
	select {
	case <-got:
		t.Fatal("turn with another message held")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case end := <-got:
		require.Nil(t, end, "no turn once the worker stops")
	case <-time.After(5 * time.Second):
		t.Fatal("turn did not return when its context ended")
	}
	require.Equal(t, 2, g.heldNow(), "the waiting message is counted as held again")
	// Pulls are not blocked by a last chance that gave up.
	require.True(t, g.enterPull(context.Background()))
}

func TestSoloGateTurnIsNotAloneBesideAnOverrunningHandler(t *testing.T) {
	g := newSoloGate()
	ctx := context.Background()
	g.add(1)
	g.addOverrun(1) // a handler past its timeout: its message no longer counts, it still runs
	end, alone := g.turn(ctx)
	require.NotNil(t, end, "an overrunning handler is not waited for")
	require.False(t, alone)
	end()
	g.addOverrun(-1) // it returned
	end, alone = g.turn(ctx)
	require.NotNil(t, end)
	require.True(t, alone)
	end()
	g.done(1)
	require.Zero(t, g.heldNow())
}
