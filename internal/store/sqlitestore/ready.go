package sqlitestore

import "github.com/droverhq/drover/internal/store"

var _ store.ReadyNotifier = (*Store)(nil)

// SetReadyHook implements store.ReadyNotifier: f is called on the writer
// goroutine, after the commit is durable, for each job that a completion
// made available by releasing its last dependency. f must not block.
func (s *Store) SetReadyHook(f func(queue string, n int)) {
	if f == nil {
		s.readyHook.Store(nil)
		return
	}
	s.readyHook.Store(&f)
}

// ready reports, once the current op commits, that a job of queue became
// available without a call the engine made for it.
func (w *wtx) ready(queue string) {
	h := w.s.readyHook.Load()
	if h == nil {
		return
	}
	w.after(func() { (*h)(queue, 1) })
}
