package cursor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff_DoublesFrom100msTo5s(t *testing.T) {
	require.Equal(t, 100*time.Millisecond, Backoff(1))
	require.Equal(t, 200*time.Millisecond, Backoff(2))
	require.Equal(t, 3200*time.Millisecond, Backoff(6))
	require.Equal(t, 5*time.Second, Backoff(7))
	require.Equal(t, 5*time.Second, Backoff(100))
}

func TestRetry_RetriesProgressAtOnceBusyShortlyAndFailuresWithBackoff(t *testing.T) {
	var tries int
	start := time.Now()
	err := Retry(context.Background(), func() (bool, error) {
		tries++
		switch tries {
		case 1, 2:
			return false, nil // progress: again at once
		case 3:
			return false, ErrBusy
		}
		return true, nil
	})
	require.NoError(t, err)
	require.Equal(t, 4, tries)
	require.Less(t, time.Since(start), 90*time.Millisecond, "no failure, so no backoff")

	boom := errors.New("boom")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tries = 0
	err = Retry(ctx, func() (bool, error) {
		tries++
		if tries == 2 {
			cancel() // during the wait after this failure
		}
		return false, boom
	})
	require.ErrorIs(t, err, boom)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, tries)
}
