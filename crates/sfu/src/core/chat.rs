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

impl ChatLog {
    /// Appends a message with the next sequence number (`seq` in `message`
    /// is ignored). Call [`ChatLog::find`] first: a resend must not be appended.
    pub fn append(&mut self, mut message: ChatMessage) -> &ChatMessage {
        let key = (message.identity.clone(), message.client_id.clone());
        debug_assert!(
            !self.seq_by_client_key.contains_key(&key),
            "append after find"
        );
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
        self.history.back().expect("just pushed")
    }

    /// The stored message this identity sent with this `client_id`, if any.
    pub fn find(&self, identity: &str, client_id: &str) -> Option<&ChatMessage> {
        let key = (identity.to_owned(), client_id.to_owned());
        self.get(*self.seq_by_client_key.get(&key)?)
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
    fn sequence_numbers_have_no_gaps_and_resends_are_found() {
        let mut log = ChatLog::default();
        assert_eq!(log.append(msg("ada", "c1", "one")).seq, 1);
        assert_eq!(log.append(msg("bob", "c1", "two")).seq, 2);
        let original = log.find("ada", "c1").unwrap();
        assert_eq!((original.seq, original.text.as_str()), (1, "one"));
        assert!(log.find("ada", "c2").is_none());
        assert!(log.find("carol", "c1").is_none(), "ids are per identity");
        assert_eq!(log.append(msg("ada", "c2", "three")).seq, 3);
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
        assert!(log.find("ada", "c0").is_none(), "evicted with its message");
        assert_eq!(log.find("ada", "c519").unwrap().seq, 520);
    }
}
