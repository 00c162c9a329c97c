package bench

import "log/slog"

// quietLogger drops the library's logs, which would drown the progress
// lines.
func quietLogger() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
