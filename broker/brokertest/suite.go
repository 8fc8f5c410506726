package brokertest

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// subtest is one conformance test. Alone marks those that inject faults:
// they run one at a time, after the others.
type subtest struct {
	name  string
	alone bool
	run   func(t *testing.T, e *env)
}

// subtests lists the suite, by area.
var subtests = []subtest{
	{name: "Publish/ResultsOncePerMessageInOrderPerShard", run: testPublishResultsInOrderPerShard},
	{name: "Publish/ConcurrentPublishersKeepTheirOrderPerKey", run: testPublishConcurrentOrderPerKey},
	{name: "Publish/CanceledContextAfterHandOffStillPublishes", run: testPublishCanceledAfterHandOff},
	{name: "Publish/UnknownTopicFailsWithErrTopicNotFound", run: testPublishUnknownTopic},
	{name: "Publish/OversizedMessageFailsWithErrInvalidMessage", run: testPublishOversized},
	{name: "Ping/AnswersWhenTheBackendIsUp", run: testPing},
	{name: "Shards/ListsEveryShardOfEachTopic", run: testShards},

	{name: "Start/ConsumerFetchesNothingUntilAssigned", run: testStartNothingUntilAssign},
	{name: "Start/EarliestReadsEverythingHeld", run: testStartEarliest},
	{name: "Start/LatestReadsEverythingPublishedAfterPrepare", run: testStartLatest},
	{name: "Start/SavedPositionWinsOverTheSpecsStart", run: testStartSavedWins},
	{name: "Start/PrepareAgainMovesNothing", run: testStartPrepareAgain},
	{name: "Start/PreparesAtOnceAgreeOnOneStart", run: testStartConcurrentPrepares},

	{name: "Acks/InOrderCloseSavesThemAndTheNextReaderGetsTheRest", run: testAcksInOrder},
	{name: "Acks/OutOfOrderTheNextReaderGetsOnlyUnacked", run: testAcksOutOfOrder},
	{name: "Acks/UnknownAndRepeatedIDsAreIgnored", run: testAcksUnknownIgnored},
	{name: "Attempts/TravelWithTheSavedPosition", run: testAttemptsTravel},
	{name: "Attempts/SavedByTimedSavesWithoutAcks", run: testAttemptsTimedSave},

	{name: "Assign/OnlyAssignedShardsAreRead", run: testAssignOnlyAssigned},
	{name: "Assign/LeavingShardStopsButTakesAcksUntilRelease", run: testAssignLeavingTakesAcks},
	{name: "Assign/AgainBeforeReleaseResumesAfterTheLastAck", run: testAssignAgainBeforeRelease},
	{name: "Abandon/ForgetsAShardWithoutSaving", run: testAbandon},

	{name: "Saves/ByCount", run: testSavesByCount},
	{name: "Saves/ByInterval", run: testSavesByInterval},
	{name: "Saves/ConfirmSavesAtOnce", run: testSavesConfirm},
	{name: "Saves/NothingWhileNotStanding", run: testSavesNotStanding},
	{name: "Resume/AfterACrashEverythingSinceTheLastSaveComesAgain", run: testResumeAfterCrash},

	{name: "Handoff/ReleaseHandsAShardToAnotherReader", run: testHandoffRelease},
	{name: "Handoff/BackToTheFirstReaderFromTheNewPosition", run: testHandoffBack},
	{name: "Fencing/StaleConfirmReportsTheShardLost", run: testFencingConfirm},
	{name: "Fencing/StaleSaveReportsShardLostAndMovesNothing", run: testFencingTimedSave},
	{name: "Fencing/StaleReleaseCountsAsReleasedAndMovesNothing", run: testFencingRelease},
	{name: "Fencing/StaleCloseMovesNothing", run: testFencingClose},

	{name: "Buffer/StopsFetchingAtTheLimitPerShard", run: testBufferLimit},
	{name: "Buffer/ResumesAsSavesDrainIt", run: testBufferResumes},

	{name: "Faults/FetchFailureIsUnavailableAndRecovers", alone: true, run: testFaultFetch},
	{name: "Faults/SaveFailureFailsReleaseUntilSavesWork", alone: true, run: testFaultSaveRelease},
	{name: "Faults/SaveFailureErrorsWrapErrUnavailable", alone: true, run: testFaultSaveSentinel},
	{name: "Faults/TimedSavesRetryAfterFailure", alone: true, run: testFaultSaveTimed},
}

// RunKnownBugsEnv, set to anything, runs the subtests a harness marks as
// known bugs instead of skipping them: to see them fail, or pass once fixed.
const RunKnownBugsEnv = "BROKERTEST_RUN_KNOWN_BUGS"

// runs numbers Run calls, so that names stay unique when one broker serves
// several runs (go test -count=2 against a real server).
var runs atomic.Int64

// Run runs every subtest against h. Subtests without faults run several at
// once (each in its own t.Run, concurrently, so that the waits of one
// overlap the others' without depending on -parallel); the fault subtests
// then run one at a time.
func Run(t *testing.T, h Harness) {
	par := 8
	if p, ok := h.(Parallelism); ok && p.Parallel() > 0 {
		par = p.Parallel()
	}
	run := fmt.Sprintf("%s%d", strconv.FormatInt(time.Now().UnixNano()%(36*36*36*36), 36), runs.Add(1))
	one := func(st subtest) {
		t.Run(st.name, func(t *testing.T) {
			if kb, ok := h.(KnownBugs); ok && os.Getenv(RunKnownBugsEnv) == "" {
				if reason := kb.KnownBug(st.name); reason != "" {
					t.Skip("known bug: " + reason)
				}
			}
			st.run(t, newEnv(t, h, run, st.name))
		})
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, st := range subtests {
		if st.alone {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			one(st)
		}()
	}
	wg.Wait()
	for _, st := range subtests {
		if st.alone {
			one(st)
		}
	}
}
