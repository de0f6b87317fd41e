//! A room: its participants (in join order) and its chat log.

use std::collections::HashMap;

use parley_proto::{Grants, ParticipantInfo, SubscriptionPreference, TrackInfo};

use super::ConnId;
use super::chat::ChatLog;
use super::rate::TokenBucket;

#[derive(Debug)]
pub struct Participant {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub grants: Grants,
    pub tracks: Vec<TrackInfo>,
    /// `None` while the connection is lost and the session may still be resumed.
    pub conn: Option<ConnId>,
    /// Bumped on every disconnect so a stale resume deadline is recognised.
    pub disconnect_epoch: u64,
    pub resume_token: String,
    pub chat_bucket: TokenBucket,
    pub publish_bucket: TokenBucket,
    /// Keyed by `(participant_id, track_id)` of the remote track.
    pub subscriptions: HashMap<(String, String), SubscriptionPreference>,
}

impl Participant {
    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            tracks: self.tracks.clone(),
        }
    }

    pub fn track_mut(&mut self, track_id: &str) -> Option<&mut TrackInfo> {
        self.tracks.iter_mut().find(|t| t.id == track_id)
    }
}

#[derive(Debug, Default)]
pub struct Room {
    /// In join order; rooms are small (bounded by the server's participant limit).
    pub participants: Vec<Participant>,
    pub chat: ChatLog,
}

impl Room {
    pub fn get(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    pub fn by_identity(&self, identity: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.identity == identity)
    }

    pub fn remove(&mut self, id: &str) -> Option<Participant> {
        let index = self.participants.iter().position(|p| p.id == id)?;
        let removed = self.participants.remove(index);
        for other in &mut self.participants {
            other.subscriptions.retain(|(pid, _), _| pid != id);
        }
        Some(removed)
    }

    /// Connections of everyone currently connected, except `except`.
    pub fn connections_except(&self, except: &str) -> Vec<ConnId> {
        self.participants
            .iter()
            .filter(|p| p.id != except)
            .filter_map(|p| p.conn)
            .collect()
    }

    pub fn connections(&self) -> Vec<ConnId> {
        self.participants.iter().filter_map(|p| p.conn).collect()
    }

    /// Everyone but `except`, as sent in `joined`.
    pub fn infos_except(&self, except: &str) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| p.id != except)
            .map(Participant::info)
            .collect()
    }
}
