//! Rules for names, ids and chat text, shared by client and server so both
//! refuse the same input with the same code.

use crate::{ErrorCode, limits};

/// A refused value: the code to send and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Invalid {
    pub code: ErrorCode,
    pub message: String,
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

/// Room names travel in links: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn room_name(room: &str) -> Result<(), Invalid> {
    let len = room.chars().count();
    if len == 0 || len > limits::MAX_ROOM_CHARS {
        return Err(invalid(
            ErrorCode::InvalidRoom,
            format!(
                "room name must be 1 to {} characters",
                limits::MAX_ROOM_CHARS
            ),
        ));
    }
    if !room
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            ErrorCode::InvalidRoom,
            "room name may contain only letters A-Z, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Display names: 1 to 64 characters after trimming, no control characters and
/// no bidirectional overrides (which let a name disguise itself as another).
/// Returns the trimmed name.
pub fn display_name(name: &str) -> Result<&str, Invalid> {
    let trimmed = name.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > limits::MAX_NAME_CHARS {
        return Err(invalid(
            ErrorCode::InvalidName,
            format!(
                "display name must be 1 to {} characters",
                limits::MAX_NAME_CHARS
            ),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || is_bidi_control(c))
    {
        return Err(invalid(
            ErrorCode::InvalidName,
            "display name must not contain control or bidi-override characters",
        ));
    }
    Ok(trimmed)
}

/// Identities: 1 to 128 bytes, no whitespace-only, no control characters.
pub fn identity(identity: &str) -> Result<(), Invalid> {
    if identity.trim().is_empty() || identity.len() > limits::MAX_IDENTITY_BYTES {
        return Err(invalid(
            ErrorCode::InvalidIdentity,
            format!("identity must be 1 to {} bytes", limits::MAX_IDENTITY_BYTES),
        ));
    }
    if identity
        .chars()
        .any(|c| c.is_control() || is_bidi_control(c))
    {
        return Err(invalid(
            ErrorCode::InvalidIdentity,
            "identity must not contain control or bidi-override characters",
        ));
    }
    Ok(())
}

/// Client-chosen ids (chat `client_id`, track ids): 1 to 64 bytes of
/// `[A-Za-z0-9._:-]`, which covers UUIDs and readable names like `camera`.
pub fn client_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty()
        || id.len() > limits::MAX_CLIENT_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(invalid(
            ErrorCode::InvalidId,
            format!(
                "ids must be 1 to {} bytes of letters, digits, '.', '_', ':' and '-'",
                limits::MAX_CLIENT_ID_BYTES
            ),
        ));
    }
    Ok(())
}

/// Chat text: not blank, at most 4 KiB, no control characters except newline and tab.
pub fn chat_text(text: &str) -> Result<(), Invalid> {
    if text.len() > limits::MAX_CHAT_BYTES {
        return Err(invalid(
            ErrorCode::ChatTooLong,
            format!(
                "chat text is {} bytes; the limit is {}",
                text.len(),
                limits::MAX_CHAT_BYTES
            ),
        ));
    }
    if text.trim().is_empty() {
        return Err(invalid(ErrorCode::ChatInvalid, "chat text is empty"));
    }
    if text
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c))
    {
        return Err(invalid(
            ErrorCode::ChatInvalid,
            "chat text must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// Explicit bidirectional formatting characters (Unicode `Bidi_Control`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(room_name("team-standup_2.b").is_ok());
        assert!(room_name(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "has space",
            "slash/room",
            "ümlaut",
            &"a".repeat(65),
            "nul\0",
        ] {
            assert_eq!(
                room_name(bad).unwrap_err().code,
                ErrorCode::InvalidRoom,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_names_are_trimmed_and_checked() {
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(display_name("Zoë 張").unwrap(), "Zoë 張");
        assert!(display_name(&"é".repeat(64)).is_ok());
        for bad in [
            "",
            "   ",
            "tab\there",
            "bell\u{7}",
            "evil\u{202E}txt.exe",
            &"é".repeat(65),
        ] {
            assert_eq!(
                display_name(bad).unwrap_err().code,
                ErrorCode::InvalidName,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_ids() {
        assert!(client_id("3f2c1a9e-2b7d-4c1e-9f00-0123456789ab").is_ok());
        assert!(client_id("camera").is_ok());
        for bad in ["", "has space", "ümlaut", &"a".repeat(65)] {
            assert_eq!(
                client_id(bad).unwrap_err().code,
                ErrorCode::InvalidId,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chat_texts() {
        assert!(chat_text("hello\n\tworld").is_ok());
        assert!(chat_text(&"a".repeat(limits::MAX_CHAT_BYTES)).is_ok());
        assert_eq!(
            chat_text(&"a".repeat(limits::MAX_CHAT_BYTES + 1))
                .unwrap_err()
                .code,
            ErrorCode::ChatTooLong
        );
        for bad in ["", " \n ", "esc\u{1b}[31m", "nul\0"] {
            assert_eq!(
                chat_text(bad).unwrap_err().code,
                ErrorCode::ChatInvalid,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn identities() {
        assert!(identity("user@example.com").is_ok());
        for bad in ["", "  ", "a\nb", &"a".repeat(129)] {
            assert_eq!(
                identity(bad).unwrap_err().code,
                ErrorCode::InvalidIdentity,
                "{bad:?}"
            );
        }
    }
}
