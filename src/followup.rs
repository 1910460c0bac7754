//! The "whistle" loop, pure: an opened incident waits for a steward's answer (`ack`,
//! `resolved`, `false_alarm`); unanswered after T1 it is sent to the steward again, after T2
//! it is escalated to the grid worker and the governance centre. An incident that clears by
//! itself is no longer chased. Deadlines are wall-clock milliseconds stored with the state, so
//! they survive a restart (a gateway down past T2 escalates at once when it comes back).
//! Time is passed in.

use serde::{Deserialize, Serialize};

/// A steward's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckAction {
    /// Seen, someone is on it.
    Ack,
    /// Dealt with.
    Resolved,
    /// Not a real problem; counted per camera and zone for ops.
    FalseAlarm,
}

/// An answer as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// What they said.
    pub action: AckAction,
    /// Who (free text from the steward's client).
    pub by: String,
    /// When, wall-clock ms (the sender's, else the time it arrived).
    pub at_ms: i64,
}

/// What is due for an incident now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Due {
    /// Send it to the steward again (T1).
    Reminder,
    /// Send it to the grid worker and the governance centre (T2).
    Escalation,
}

/// T1 and T2 in milliseconds after the incident opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Reminder after this long unanswered.
    pub remind_after_ms: i64,
    /// Escalation after this long unanswered.
    pub escalate_after_ms: i64,
}

/// Follow-up state of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followup {
    /// When the `opened` event was committed, gateway wall clock.
    pub opened_at_ms: i64,
    /// The reminder went out.
    pub reminded: bool,
    /// The escalation went out.
    pub escalated: bool,
    /// When the incident cleared by itself, if it did.
    pub cleared_at_ms: Option<i64>,
    /// Answers received, oldest first (at most [`MAX_ANSWERS`]).
    pub answers: Vec<Answer>,
}

/// Answers kept per incident; more are counted in logs only.
pub const MAX_ANSWERS: usize = 16;

/// How a new answer was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Recorded. `first_false_alarm` is true when it is the first `false_alarm` for this
    /// incident (the one that counts).
    Recorded {
        /// Counts towards the camera/zone's false-alarm counter.
        first_false_alarm: bool,
    },
    /// The same sender gave the same action before (an MQTT redelivery, a double click, a
    /// phone resending after a restart): no news.
    Duplicate,
    /// Already [`MAX_ANSWERS`] answers: not recorded, and not echoed to anyone.
    TooMany,
}

impl Followup {
    /// A new incident, opened at `now_ms`.
    pub fn opened(now_ms: i64) -> Self {
        Followup { opened_at_ms: now_ms, reminded: false, escalated: false, cleared_at_ms: None, answers: Vec::new() }
    }

    /// Whether anyone still needs to be chased.
    pub fn is_waiting(&self) -> bool {
        self.answers.is_empty() && self.cleared_at_ms.is_none() && !self.escalated
    }

    /// What is due at `now_ms`, if anything. Past T2 without a reminder, only the escalation
    /// is due (a gateway that was down does not send both at once).
    pub fn due(&self, now_ms: i64, timers: Timers) -> Option<Due> {
        if !self.is_waiting() {
            return None;
        }
        let waited = now_ms - self.opened_at_ms;
        if waited >= timers.escalate_after_ms {
            Some(Due::Escalation)
        } else if !self.reminded && waited >= timers.remind_after_ms {
            Some(Due::Reminder)
        } else {
            None
        }
    }

    /// When the next follow-up falls due, if one can.
    pub fn next_deadline_ms(&self, timers: Timers) -> Option<i64> {
        if !self.is_waiting() {
            None
        } else if self.reminded {
            Some(self.opened_at_ms + timers.escalate_after_ms)
        } else {
            Some(self.opened_at_ms + timers.remind_after_ms)
        }
    }

    /// Records that `due` was sent.
    pub fn sent(&mut self, due: Due) {
        self.reminded = true;
        if due == Due::Escalation {
            self.escalated = true;
        }
    }

    /// Why [`Followup::answer`] would refuse `answer` (`Duplicate` or `TooMany`), if it would:
    /// lets a caller drop a flood of refused answers after a read, without a write.
    pub fn refuses(&self, answer: &Answer) -> Option<Answered> {
        if self.answers.iter().any(|earlier| earlier.action == answer.action && earlier.by == answer.by) {
            Some(Answered::Duplicate)
        } else if self.answers.len() >= MAX_ANSWERS {
            Some(Answered::TooMany)
        } else {
            None
        }
    }

    /// Records an answer. The same person giving an action they gave before is a duplicate,
    /// whatever its time: a redelivered message without `at_ms` gets a new arrival time, so
    /// the time cannot tell a redelivery (issue 11: 2000 messages became 1717 answers).
    /// Past [`MAX_ANSWERS`], answers are refused.
    pub fn answer(&mut self, answer: Answer) -> Answered {
        if let Some(refused) = self.refuses(&answer) {
            return refused;
        }
        let first_false_alarm =
            answer.action == AckAction::FalseAlarm && !self.answers.iter().any(|a| a.action == AckAction::FalseAlarm);
        self.answers.push(answer);
        Answered::Recorded { first_false_alarm }
    }

    /// Whether the state can be forgotten at `now_ms`: answered or cleared, and nothing
    /// happened for `keep_ms` (acks arriving late still find it until then).
    pub fn expired(&self, now_ms: i64, keep_ms: i64) -> bool {
        let last = self.answers.iter().map(|a| a.at_ms).chain(self.cleared_at_ms).max();
        match last {
            Some(last) => now_ms - last.max(self.opened_at_ms) >= keep_ms,
            None => self.escalated && now_ms - self.opened_at_ms >= keep_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMERS: Timers = Timers { remind_after_ms: 600_000, escalate_after_ms: 1_800_000 };

    #[test]
    fn unanswered_incident_is_reminded_at_t1_then_escalated_at_t2() {
        let mut followup = Followup::opened(1_000);
        let mut sent = Vec::new();
        for now in (1_000..=2_000_000).step_by(1_000) {
            if let Some(due) = followup.due(now, TIMERS) {
                sent.push((now, due));
                followup.sent(due);
            }
        }
        assert_eq!(sent, [(601_000, Due::Reminder), (1_801_000, Due::Escalation)]);
        assert_eq!(followup.next_deadline_ms(TIMERS), None);
    }

    #[test]
    fn an_answer_stops_the_chase() {
        let mut followup = Followup::opened(0);
        followup.sent(Due::Reminder);
        let answer = Answer { action: AckAction::Ack, by: "wang".into(), at_ms: 700_000 };
        assert_eq!(followup.answer(answer.clone()), Answered::Recorded { first_false_alarm: false });
        assert_eq!(followup.answer(answer.clone()), Answered::Duplicate);
        // The same person pressing the same button again later is a repeat, not news; a
        // change of answer is.
        let again = Answer { at_ms: 705_000, ..answer.clone() };
        assert_eq!(followup.answer(again), Answered::Duplicate);
        let resolved = Answer { action: AckAction::Resolved, at_ms: 800_000, ..answer.clone() };
        assert_eq!(followup.answer(resolved), Answered::Recorded { first_false_alarm: false });
        // A redelivery of the first answer, after the second, is still a duplicate.
        let redelivered = Answer { at_ms: 900_000, ..answer };
        assert_eq!(followup.answer(redelivered), Answered::Duplicate);
        assert_eq!(followup.due(10_000_000, TIMERS), None);
    }

    #[test]
    fn past_the_cap_answers_are_refused_not_recorded() {
        let mut followup = Followup::opened(0);
        for i in 0..MAX_ANSWERS {
            let answer = Answer { action: AckAction::Ack, by: format!("steward-{i}"), at_ms: 1 };
            assert_eq!(followup.answer(answer), Answered::Recorded { first_false_alarm: false });
        }
        let one_more = Answer { action: AckAction::FalseAlarm, by: "steward-x".into(), at_ms: 2 };
        assert_eq!(followup.answer(one_more), Answered::TooMany);
        let again = Answer { action: AckAction::Ack, by: "steward-0".into(), at_ms: 3 };
        assert_eq!(followup.answer(again), Answered::Duplicate, "a duplicate stays a duplicate");
        assert_eq!(followup.answers.len(), MAX_ANSWERS);
    }

    #[test]
    fn only_the_first_false_alarm_counts() {
        let mut followup = Followup::opened(0);
        let first = Answer { action: AckAction::FalseAlarm, by: "wang".into(), at_ms: 1 };
        let second = Answer { action: AckAction::FalseAlarm, by: "li".into(), at_ms: 2 };
        assert_eq!(followup.answer(first), Answered::Recorded { first_false_alarm: true });
        assert_eq!(followup.answer(second), Answered::Recorded { first_false_alarm: false });
    }

    #[test]
    fn a_cleared_incident_is_not_chased_and_a_late_restart_escalates_once() {
        let mut cleared = Followup::opened(0);
        cleared.cleared_at_ms = Some(5_000);
        assert_eq!(cleared.due(5_000_000, TIMERS), None);
        // Down from before T1 until after T2: one escalation, no reminder first.
        let late = Followup::opened(0);
        assert_eq!(late.next_deadline_ms(TIMERS), Some(600_000));
        assert_eq!(late.due(2_000_000, TIMERS), Some(Due::Escalation));
    }

    #[test]
    fn answered_state_expires_after_the_keep_period() {
        let mut followup = Followup::opened(0);
        followup.answer(Answer { action: AckAction::Resolved, by: "wang".into(), at_ms: 100 });
        assert!(!followup.expired(100 + 86_400_000 - 1, 86_400_000));
        assert!(followup.expired(100 + 86_400_000, 86_400_000));
        assert!(!Followup::opened(0).expired(10 * 86_400_000, 86_400_000), "a waiting incident never expires");
    }
}
