// The retry policy (a subscription's retry_policy, Pub/Sub's exponential
// backoff): a message nacked without a delay, or held past its ack
// deadline, is delivered again no sooner than its backoff, which doubles
// from the policy's minimum with each delivery of the message up to its
// maximum. Like a nack with a delay, the backoff holds the message's
// shard (shardQueue.notBefore, armRetry): later messages of the shard wait
// behind it, in order, while other shards flow. Runs on run.

package node

import "time"

// retryBackoff is the backoff of a message failed on its attempt'th
// delivery: min(hi, lo * 2^(attempt-1)); 0 with no policy.
func retryBackoff(lo, hi time.Duration, attempt uint32) time.Duration {
	if lo <= 0 {
		return 0
	}
	hi = max(hi, lo) // the settings are validated; a bad pair still ends
	d := lo
	for i := uint32(1); i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// backOff holds the shards of msgs, failed messages about to be handed
// back, for their backoff under the subscription's retry policy.
func (s *subscription) backOff(msgs []*message) {
	if s.settings.retryMin <= 0 {
		return
	}
	now := time.Now()
	for _, m := range msgs {
		at := now.Add(retryBackoff(s.settings.retryMin, s.settings.retryMax, m.attempt))
		if q := s.queue(m.d.Shard); q.notBefore.Before(at) {
			q.notBefore = at
		}
		s.delays = true // armRetry looks
	}
}
