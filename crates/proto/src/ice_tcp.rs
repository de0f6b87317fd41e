//! ICE-TCP framing (RFC 4571, as RFC 6544 uses it): every STUN, DTLS, RTP
//! or RTCP packet on a TCP connection to the SFU's media port is preceded by
//! its length as a 16-bit big-endian number. Both ends use these helpers so
//! the framing and its limit are defined once.

use crate::limits::MAX_ICE_TCP_FRAME;

/// `packet` with its length prefix; `None` when it is empty or over the limit.
pub fn frame(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.is_empty() || packet.len() > MAX_ICE_TCP_FRAME {
        return None;
    }
    let len = u16::try_from(packet.len()).ok()?;
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    Some(framed)
}

/// The packet length a frame header announces; `None` when it is out of
/// bounds, after which the connection cannot be trusted and is closed.
pub fn frame_len(header: [u8; 2]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes(header));
    (1..=MAX_ICE_TCP_FRAME).contains(&len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_big_endian_length_within_the_limit() {
        let framed = frame(&[7; 300]).unwrap();
        assert_eq!(&framed[..2], &[1, 44]);
        assert_eq!(frame_len([framed[0], framed[1]]), Some(300));
        assert_eq!(frame(&[]), None);
        assert_eq!(frame(&vec![0; MAX_ICE_TCP_FRAME + 1]), None);
        assert_eq!(frame_len([0, 0]), None);
        assert_eq!(frame_len([0x08, 0x01]), None, "2049 is over the limit");
        assert_eq!(frame_len([0x08, 0x00]), Some(MAX_ICE_TCP_FRAME));
    }
}
