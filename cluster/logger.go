package cluster

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter adapts memberlist's *log.Logger lines ("[LEVEL] memberlist:
// text") to slog, keeping memberlist's level. log.Logger makes one Write
// per line.
//
// It also watches for the one event memberlist only logs: this node's
// probe of a member failed and it now suspects it ("Suspect X has failed,
// no acks received"). If memberlist rewords that line, suspicions are
// merely no longer counted or shown by Members.
type logWriter struct {
	log       *slog.Logger
	onSuspect func(member string)
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(p))
	if w.onSuspect != nil {
		if name, ok := suspectOf(msg); ok {
			w.onSuspect(name)
		}
	}
	ctx := context.Background()
	if w.log.Enabled(ctx, level) {
		w.log.Log(ctx, level, msg, "component", "memberlist")
	}
	return len(p), nil
}

func parseLogLine(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, text, ok := strings.Cut(rest, "]"); ok {
			switch tag {
			case "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimSpace(text)
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}

func suspectOf(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "Suspect ")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, " has failed")
	return name, ok && name != ""
}
