//! A room's chat log: gap-free sequence numbers, bounded history, and
//! de-duplication of resent messages by `(identity, client_id)`.

use std::collections::{HashMap, VecDeque};

use parley_proto::{ChatMessage, limits};

#[derive(Debug, Default)]
pub struct ChatLog {
    last_seq: u64,
    history: VecDeque<ChatMessage>,
    seq_by_client_key: HashMap<(String, String), u64>,
}

/// What [`ChatLog::append`] did with a message.
#[derive(Debug)]
pub enum Appended<'a> {
    /// A new message, now in the history with the next sequence number.
    New(&'a ChatMessage),
    /// The same identity already sent this `client_id`; here is the original.
    Duplicate(&'a ChatMessage),
}

impl ChatLog {
    /// Appends a message unless its `(identity, client_id)` is already in the
    /// history. `seq` in `message` is ignored and assigned here.
    pub fn append(&mut self, mut message: ChatMessage) -> Appended<'_> {
        let key = (message.identity.clone(), message.client_id.clone());
        if let Some(&seq) = self.seq_by_client_key.get(&key) {
            return Appended::Duplicate(self.get(seq).expect("indexed messages are in history"));
        }
        self.last_seq += 1;
        message.seq = self.last_seq;
        self.seq_by_client_key.insert(key, message.seq);
        if self.history.len() == limits::CHAT_HISTORY
            && let Some(evicted) = self.history.pop_front()
        {
            self.seq_by_client_key
                .remove(&(evicted.identity, evicted.client_id));
        }
        self.history.push_back(message);
        Appended::New(self.history.back().expect("just pushed"))
    }

    /// Messages with a sequence number above `after` (all when `None`), oldest first.
    pub fn since(&self, after: Option<u64>) -> Vec<ChatMessage> {
        let after = after.unwrap_or(0);
        let skip = self.history.partition_point(|m| m.seq <= after);
        self.history.iter().skip(skip).cloned().collect()
    }

    fn get(&self, seq: u64) -> Option<&ChatMessage> {
        let first = self.history.front()?.seq;
        self.history
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(identity: &str, client_id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            seq: 0,
            ts_ms: 0,
            participant_id: "p".into(),
            identity: identity.into(),
            name: identity.into(),
            client_id: client_id.into(),
            text: text.into(),
        }
    }

    #[test]
    fn sequence_numbers_have_no_gaps_and_duplicates_are_recognised() {
        let mut log = ChatLog::default();
        assert!(matches!(log.append(msg("ada", "c1", "one")), Appended::New(m) if m.seq == 1));
        assert!(matches!(log.append(msg("bob", "c1", "two")), Appended::New(m) if m.seq == 2));
        match log.append(msg("ada", "c1", "one again")) {
            Appended::Duplicate(original) => {
                assert_eq!((original.seq, original.text.as_str()), (1, "one"));
            }
            Appended::New(_) => panic!("resend must not create a second copy"),
        }
        assert!(matches!(log.append(msg("ada", "c2", "three")), Appended::New(m) if m.seq == 3));
        let seqs: Vec<u64> = log.since(None).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let after: Vec<u64> = log.since(Some(1)).iter().map(|m| m.seq).collect();
        assert_eq!(after, [2, 3]);
        assert!(log.since(Some(99)).is_empty());
    }

    #[test]
    fn history_is_bounded_and_eviction_forgets_client_ids() {
        let mut log = ChatLog::default();
        let total = limits::CHAT_HISTORY + 20;
        for i in 0..total {
            log.append(msg("ada", &format!("c{i}"), "x"));
        }
        let history = log.since(None);
        assert_eq!(history.len(), limits::CHAT_HISTORY);
        assert_eq!(history.first().unwrap().seq, 21);
        assert_eq!(history.last().unwrap().seq, total as u64);
        assert_eq!(log.seq_by_client_key.len(), limits::CHAT_HISTORY);
        assert!(matches!(
            log.append(msg("ada", "c0", "x")),
            Appended::New(_)
        ));
        assert!(
            matches!(log.append(msg("ada", "c519", "x")), Appended::Duplicate(m) if m.seq == 520)
        );
    }
}
