package node

// Hardening limits (issue 12, point 5) that are not part of one request's
// own validation: each names the flag that sets it, so an operator who
// reads the client's error knows what to raise.

// checkAckIDs bounds the ids of one ack, nack or modify_ack_deadline: the
// dispatcher handles a request's ids in one go, so a request of millions
// would hold the subscription's loop for as long as it takes.
func (s *subscribeService) checkAckIDs(what string, n int) error {
	if max := s.cfg.MaxAckIDs; max > 0 && n > max {
		return invalidf("%s: %d message ids, over the limit of %d per request (--max-ack-ids); send them in smaller requests", what, n, max)
	}
	return nil
}
