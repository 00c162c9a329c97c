package bench

import (
	"io"
	"log/slog"
)

// quietLogger drops the library's logs, which would drown the progress
// lines.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
