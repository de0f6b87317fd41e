//! Just enough H.264 RTP payload parsing (RFC 6184) to see where a keyframe
//! starts, so a subscriber can be switched to another layer on a clean picture.

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

fn starts_picture(nal_type: u8) -> bool {
    // Encoders put SPS (and PPS) right before each IDR picture.
    matches!(nal_type, NAL_IDR | NAL_SPS)
}

/// Whether this RTP payload is the first packet of a keyframe.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if size == 0 || rest.len() < 2 + size {
                    return false;
                }
                if starts_picture(rest[2] & 0x1f) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && starts_picture(fu & 0x1f)),
        single => starts_picture(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_nal_units() {
        assert!(is_keyframe_start(&[0x65, 1, 2]));
        assert!(is_keyframe_start(&[0x67, 1, 2]));
        assert!(!is_keyframe_start(&[0x41, 1, 2]));
        assert!(!is_keyframe_start(&[]));
    }

    #[test]
    fn aggregated_sps_pps_counts() {
        let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(is_keyframe_start(&stap));
        let p_frames = [0x78, 0, 2, 0x41, 0x9a, 0, 1, 0x01];
        assert!(!is_keyframe_start(&p_frames));
    }

    #[test]
    fn fragments_only_at_the_start() {
        assert!(is_keyframe_start(&[0x7c, 0x85, 9]));
        assert!(!is_keyframe_start(&[0x7c, 0x05, 9]));
        assert!(!is_keyframe_start(&[0x7c, 0x81, 9]));
    }

    #[test]
    fn truncated_aggregates_are_not_keyframes() {
        assert!(!is_keyframe_start(&[0x78, 0, 9, 0x65]));
        assert!(!is_keyframe_start(&[0x78, 0]));
        assert!(!is_keyframe_start(&[0x7c]));
    }
}
