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
// It also watches for two events memberlist only logs: this node's probe
// of a member failed and it now suspects it ("Suspect X has failed, no
// acks received"), and this node refuted another's claim that it is
// suspect or dead ("Refuting a dead message (from: X)"). If memberlist
// rewords those lines, they are merely no longer counted (and suspicions
// no longer shown by Members).
type logWriter struct {
	log       *slog.Logger
	onSuspect func(member string)
	onRefute  func(accusation string) // "suspect" or "dead"
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(p))
	if name, ok := suspectOf(msg); ok && w.onSuspect != nil {
		w.onSuspect(name)
	}
	if accusation, ok := refutationOf(msg); ok && w.onRefute != nil {
		w.onRefute(accusation)
	}
	ctx := context.Background()
	if w.log.Enabled(ctx, level) {
		w.log.Log(ctx, level, msg)
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

func refutationOf(msg string) (string, bool) {
	switch {
	case strings.HasPrefix(msg, "Refuting a suspect message"):
		return "suspect", true
	case strings.HasPrefix(msg, "Refuting a dead message"):
		return "dead", true
	}
	return "", false
}
