//! Decoding messages from the wire, telling malformed from unknown.

use std::borrow::Cow;

use serde::Deserialize;

use crate::{ClientMessage, ErrorCode, ServerMessage};

/// Why a text frame is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ParseError {
    /// [`ErrorCode::BadMessage`] or [`ErrorCode::UnknownType`].
    pub code: ErrorCode,
    /// The `type` field, when one could be read.
    pub type_name: Option<String>,
    /// What serde reported, for people.
    pub detail: String,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    type_name: Option<Cow<'a, str>>,
}

/// Parses one client message. Unknown fields are ignored; an unknown `type`
/// gives [`ErrorCode::UnknownType`]; anything else that does not decode gives
/// [`ErrorCode::BadMessage`].
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    serde_json::from_str(text).map_err(|err| classify(text, &err, ClientMessage::TYPES))
}

/// Parses one server message (for clients). Same rules as [`parse_client_message`],
/// except that any decoding failure is [`ErrorCode::BadMessage`].
pub fn parse_server_message(text: &str) -> Result<ServerMessage, ParseError> {
    serde_json::from_str(text).map_err(|err| ParseError {
        code: ErrorCode::BadMessage,
        type_name: read_type(text),
        detail: err.to_string(),
    })
}

fn read_type(text: &str) -> Option<String> {
    serde_json::from_str::<TypeOnly<'_>>(text)
        .ok()
        .and_then(|t| t.type_name)
        .map(Cow::into_owned)
}

fn classify(text: &str, err: &serde_json::Error, known: &[&str]) -> ParseError {
    let type_name = read_type(text);
    let code = match &type_name {
        Some(name) if !known.contains(&name.as_str()) => ErrorCode::UnknownType,
        _ => ErrorCode::BadMessage,
    };
    let detail = match (&type_name, code) {
        (Some(name), ErrorCode::UnknownType) => format!("unknown message type `{name}`"),
        (None, _) if err.is_data() => "message has no `type` field".to_owned(),
        _ => err.to_string(),
    };
    // Cap what we echo back: the detail may quote attacker-controlled input.
    let type_name = type_name.map(|mut name| {
        truncate_to_char_boundary(&mut name, 64);
        name
    });
    ParseError {
        code,
        type_name,
        detail: truncate_owned(detail, 200),
    }
}

fn truncate_owned(mut s: String, max: usize) -> String {
    truncate_to_char_boundary(&mut s, max);
    s
}

fn truncate_to_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Join, Resume};

    #[test]
    fn join_round_trips() {
        let join = ClientMessage::Join(Join {
            protocol: vec![1],
            room: "standup".into(),
            name: "Ada".into(),
            token: None,
            identity: Some("ada".into()),
            resume: Some(Resume {
                token: "secret".into(),
                last_chat_seq: Some(4),
            }),
            media: true,
        });
        let wire = serde_json::to_string(&join).unwrap();
        assert!(wire.starts_with(r#"{"type":"join","#), "{wire}");
        assert_eq!(parse_client_message(&wire).unwrap(), join);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let msg = parse_client_message(r#"{"type":"ping","id":1,"future":true}"#).unwrap();
        assert_eq!(msg, ClientMessage::Ping { id: 1 });
    }

    #[test]
    fn unknown_type_is_told_apart_from_malformed() {
        let err = parse_client_message(r#"{"type":"teleport","to":"mars"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.type_name.as_deref(), Some("teleport"));

        let err = parse_client_message(r#"{"type":"chat_send","text":"hi"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadMessage);
        assert_eq!(err.type_name.as_deref(), Some("chat_send"));

        for garbage in [
            "",
            "not json",
            "[1,2]",
            "{}",
            r#"{"type":7}"#,
            "{\"type\":\"ping\"",
        ] {
            let err = parse_client_message(garbage).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadMessage, "{garbage:?}");
        }
    }

    #[test]
    fn echoed_type_name_is_capped() {
        let long = "x".repeat(10_000);
        let err = parse_client_message(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.type_name.unwrap().len() <= 64);
        assert!(err.detail.len() <= 200);
    }

    #[test]
    fn every_known_type_name_matches_its_variant() {
        let samples = [
            r#"{"type":"join","protocol":[1],"room":"r","name":"n"}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"chat_send","client_id":"c","text":"t"}"#,
            r#"{"type":"publish_track","track":{"id":"mic","kind":"audio","source":"microphone"}}"#,
            r#"{"type":"unpublish_track","track_id":"mic"}"#,
            r#"{"type":"set_muted","track_id":"mic","muted":true}"#,
            r#"{"type":"update_subscription","participant_id":"p","track_id":"camera","max_width":320,"max_height":180}"#,
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"type":"ice_candidate","candidate":""}"#,
            r#"{"type":"ping","id":1}"#,
        ];
        assert_eq!(samples.len(), ClientMessage::TYPES.len());
        for (sample, name) in samples.iter().zip(ClientMessage::TYPES) {
            let msg = parse_client_message(sample).unwrap();
            assert_eq!(msg.type_name(), *name);
        }
    }

    #[test]
    fn server_error_message_shape() {
        let msg = ServerMessage::Error(
            crate::ErrorBody::new(ErrorCode::RateLimited, "slow down").in_reply_to("chat_send"),
        );
        let wire = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            wire,
            r#"{"type":"error","code":"rate_limited","message":"slow down","in_reply_to":"chat_send"}"#
        );
        assert_eq!(parse_server_message(&wire).unwrap(), msg);
    }
}
