package pgstore

// FailBatches returns how many failure batches s has settled.
func FailBatches(s *Store) int64 { return s.failBatches.Load() }
