// Package job is Drover's vocabulary: the Job record, its states and the
// rules that move a job between them, the validation of every field a
// caller may set, the default retry backoff, unique keys, and the sentinel
// errors that every layer branches on.
//
// It imports only the standard library so that every other package,
// including the stores, may depend on it.
package job
