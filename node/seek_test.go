package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestSeekGate: holds are counted per subscription and end at their
// deadline at the latest; a nil gate holds nothing.
func TestSeekGate(t *testing.T) {
	now := time.Now()
	var g seekGate
	assert.False(t, g.held("s", now))
	g.hold("s", now.Add(time.Minute))
	g.hold("s", now.Add(time.Second))
	assert.True(t, g.held("s", now))
	assert.False(t, g.held("other", now))
	g.lift("s")
	assert.True(t, g.held("s", now), "the other seek still holds it")
	g.lift("s")
	assert.False(t, g.held("s", now), "both lifted")
	g.lift("s") // a lift without a hold changes nothing
	assert.False(t, g.held("s", now))

	g.hold("s", now.Add(time.Second))
	assert.True(t, g.held("s", now.Add(999*time.Millisecond)))
	assert.False(t, g.held("s", now.Add(time.Second)), "a lost resume: the hold ends at its deadline")
	assert.Empty(t, g.holds, "expired holds are dropped")

	var none *seekGate
	assert.False(t, none.held("s", now))
}
