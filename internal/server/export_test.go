package server

import "time"

// EndDrainDelayOn makes the drain delay of s, whatever its length, end when
// release is closed.
func (s *Server) EndDrainDelayOn(release <-chan struct{}) {
	s.afterDrainDelay = func(time.Duration) <-chan time.Time {
		over := make(chan time.Time)
		go func() {
			<-release
			close(over)
		}()
		return over
	}
}
