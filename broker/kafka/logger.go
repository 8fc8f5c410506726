package kafka

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// slogAdapter hands franz-go's logs to slog. franz-go is chatty at info;
// only warnings and errors pass.
type slogAdapter struct{ l *slog.Logger }

func newLogger(l *slog.Logger) kgo.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return slogAdapter{l: l.With("component", "franz-go")}
}

func (a slogAdapter) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (a slogAdapter) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var lv slog.Level
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	case kgo.LogLevelInfo:
		lv = slog.LevelInfo
	default:
		lv = slog.LevelDebug
	}
	a.l.Log(context.Background(), lv, msg, keyvals...)
}
