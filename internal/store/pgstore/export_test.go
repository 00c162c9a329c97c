package pgstore

// FailBatches returns how many failure batches s has settled.
func FailBatches(s *Store) int64 { return s.failBatches.Load() }

// Analyzes returns how many times s has run ANALYZE drover_jobs itself.
func Analyzes(s *Store) int64 { return s.analyzes.Load() }

// The hot statements, for plan tests.
const (
	LeaseSQL    = leaseSQL
	CompleteSQL = completeSQL
	ResolveSQL  = resolveSQL
)
