// Package engine holds Drover's use cases: enqueue, lease (with long
// polling), heartbeat, complete, fail, snooze, cancel, retry, delete and the
// reads. Every face (the Go library, REST, gRPC, GraphQL, the CLI through
// REST) calls this package; none re-implements job logic.
//
// # The state machine
//
//	           insert
//	             │
//	 pending ────┼──── scheduled ──promote──┐
//	(deps done)  │                          ▼
//	             └──────────────────────► available ◄────────────┐
//	                                         │ lease             │ rescue (lease expired,
//	                                         ▼                   │ attempts left) / fail
//	                                      running ───────────────┤ with retry now
//	             complete ┌──────────────┬───┴────┬──────────┐   │
//	                      ▼              ▼        ▼          ▼   │
//	                  completed      retryable cancelled discarded
//	                                     │                       │
//	                                     └── promote (due) ──────┘
//
// A final state (completed, cancelled, discarded) changes only when an
// operator retries the job. The edges are listed in job.CanTransition and
// the choices between them (job.FailedState, job.RescuedState, ...) are
// store-independent so that every store makes the same choice.
//
// # The lease protocol
//
// Leasing a job moves it to running, increments its attempt and gives it a
// fresh random lease token with an expiry. The token is the fence: only the
// holder of the job's live token may heartbeat (extend the expiry),
// complete, fail or snooze it. When a lease expires, the rescuer (package
// maintenance) records the expiry as a failed attempt and makes the job
// available again at once, so a lost worker delays a job by about its
// lease, not by a backoff. From then on the old token is stale: every
// settle that presents it is refused with job.ErrLeaseLost and changes
// nothing. Repeating a settle with the token that performed it returns the
// job as it is, so a worker whose response was lost may safely retry.
//
// At most one live lease exists per job. A second execution of a job
// starts only after its first lease ended: it expired and was rescued, or
// an operator cancelled and then retried the job. The first execution may
// still be running then (its worker may not know yet), which is why
// delivery is at least once and why its late settle is refused.
//
// # Job events
//
// Every state change made through the engine is published as an Event to
// the subscribers of Subscribe (the gRPC EventService, and later GraphQL
// subscriptions and the dashboard). Each subscriber has a bounded buffer
// and is dropped when it falls behind; with nobody subscribed, publishing
// costs one atomic load. See events.go.
package engine
