//! Opus for 48 kHz mono speech in 20 ms frames, with in-band FEC and DTX on.

use crate::frame::{SAMPLE_RATE, SAMPLES_PER_FRAME};

/// Largest Opus packet we produce (RFC 6716 allows 1275 bytes per frame).
pub const MAX_PACKET: usize = 1275;

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct OpusError(String);

impl From<opus::Error> for OpusError {
    fn from(err: opus::Error) -> Self {
        Self(err.to_string())
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    pub bitrate_bps: i32,
    /// Loss the network is expected to have; tunes how much FEC data is sent.
    pub expected_loss_percent: i32,
    pub fec: bool,
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
            expected_loss_percent: 10,
            fec: true,
            dtx: true,
        }
    }
}

/// One encoded 20 ms frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedAudio {
    pub len: usize,
    /// Silence under DTX: a packet of two bytes or less need not be sent.
    pub silent: bool,
}

pub struct OpusEncoder {
    inner: opus::Encoder,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusEncoder")
    }
}

impl OpusEncoder {
    pub fn new(settings: OpusSettings) -> Result<Self, OpusError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(settings.bitrate_bps))?;
        inner.set_inband_fec(settings.fec)?;
        inner.set_packet_loss_perc(settings.expected_loss_percent.clamp(0, 100))?;
        inner.set_dtx(settings.dtx)?;
        Ok(Self { inner })
    }

    /// Encodes 20 ms (960 samples) into `out`, which must hold [`MAX_PACKET`] bytes.
    pub fn encode(&mut self, samples: &[f32], out: &mut [u8]) -> Result<EncodedAudio, OpusError> {
        if samples.len() != SAMPLES_PER_FRAME {
            return Err(OpusError(format!(
                "expected {SAMPLES_PER_FRAME} samples, got {}",
                samples.len()
            )));
        }
        let len = self.inner.encode_float(samples, out)?;
        Ok(EncodedAudio {
            len,
            silent: len <= 2,
        })
    }

    pub fn set_bitrate(&mut self, bps: i32) -> Result<(), OpusError> {
        Ok(self.inner.set_bitrate(opus::Bitrate::Bits(bps))?)
    }

    pub fn set_expected_loss(&mut self, percent: i32) -> Result<(), OpusError> {
        Ok(self.inner.set_packet_loss_perc(percent.clamp(0, 100))?)
    }

    /// Samples of look-ahead: how far the decoded signal lags the input.
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        Ok(usize::try_from(self.inner.get_lookahead()?).unwrap_or(0))
    }
}

fn check_output(out: &[f32]) -> Result<(), OpusError> {
    if out.len() < SAMPLES_PER_FRAME {
        return Err(OpusError(format!(
            "output holds {} samples; a frame needs {SAMPLES_PER_FRAME}",
            out.len()
        )));
    }
    Ok(())
}

pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusDecoder")
    }
}

impl OpusDecoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
        })
    }

    /// Decodes one packet into `out` (960 samples for a 20 ms frame).
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, OpusError> {
        if packet.is_empty() {
            return Err(OpusError(
                "empty packet: use conceal() for a lost one".into(),
            ));
        }
        Ok(self.inner.decode_float(packet, out, false)?)
    }

    /// A lost frame whose successor has arrived: rebuilt from the successor's
    /// in-band FEC data. Call before decoding the successor itself.
    pub fn recover(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<usize, OpusError> {
        check_output(out)?;
        Ok(self
            .inner
            .decode_float(next_packet, &mut out[..SAMPLES_PER_FRAME], true)?)
    }

    /// A lost frame with nothing to rebuild it from: packet-loss concealment.
    pub fn conceal(&mut self, out: &mut [f32]) -> Result<usize, OpusError> {
        check_output(out)?;
        Ok(self
            .inner
            .decode_float(&[], &mut out[..SAMPLES_PER_FRAME], false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::AudioFrame;
    use crate::quality::envelope_correlation;
    use crate::synthetic_audio::{Signal, SyntheticAudio};

    struct Clip {
        source: Vec<f32>,
        packets: Vec<Vec<u8>>,
    }

    fn encode_speech(seconds: u64) -> Clip {
        let mut voice = SyntheticAudio::new(Signal::Speech, false);
        let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut frame = AudioFrame::silent();
        let mut buffer = [0u8; MAX_PACKET];
        let mut clip = Clip {
            source: Vec::new(),
            packets: Vec::new(),
        };
        for i in 0..seconds * 50 {
            voice.render(&mut frame, i * 20_000);
            clip.source.extend_from_slice(&frame.samples);
            let encoded = encoder.encode(&frame.samples, &mut buffer).unwrap();
            clip.packets.push(buffer[..encoded.len].to_vec());
        }
        clip
    }

    /// Deterministic 10 % loss, with some back-to-back pairs.
    fn lost(index: usize) -> bool {
        let h = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        h < 20 || index.is_multiple_of(97) || (index % 97 == 1)
    }

    enum Repair {
        FecAndPlc,
        Silence,
    }

    fn receive(
        clip: &Clip,
        loss: impl Fn(usize) -> bool,
        repair: &Repair,
    ) -> (Vec<f32>, usize, usize) {
        let mut decoder = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        let mut pcm = vec![0f32; SAMPLES_PER_FRAME];
        let (mut recovered, mut concealed) = (0, 0);
        for (i, packet) in clip.packets.iter().enumerate() {
            if loss(i) {
                match repair {
                    Repair::Silence => pcm.fill(0.0),
                    Repair::FecAndPlc => match clip.packets.get(i + 1).filter(|_| !loss(i + 1)) {
                        Some(next) => {
                            decoder.recover(next, &mut pcm).unwrap();
                            recovered += 1;
                        }
                        None => {
                            decoder.conceal(&mut pcm).unwrap();
                            concealed += 1;
                        }
                    },
                }
            } else {
                let n = decoder.decode(packet, &mut pcm).unwrap();
                assert_eq!(n, SAMPLES_PER_FRAME);
            }
            out.extend_from_slice(&pcm);
        }
        (out, recovered, concealed)
    }

    #[test]
    fn speech_survives_ten_percent_loss_with_fec_and_concealment() {
        let clip = encode_speech(10);
        let losses = (0..clip.packets.len()).filter(|&i| lost(i)).count();
        let rate = losses as f64 / clip.packets.len() as f64;
        assert!((0.08..0.13).contains(&rate), "loss rate {rate}");

        let (clean, _, _) = receive(&clip, |_| false, &Repair::FecAndPlc);
        let (repaired, recovered, concealed) = receive(&clip, lost, &Repair::FecAndPlc);
        let (silenced, _, _) = receive(&clip, lost, &Repair::Silence);
        let score =
            |received: &[f32]| envelope_correlation(&clip.source, received, 2400).correlation;
        let (clean, repaired, silenced) = (score(&clean), score(&repaired), score(&silenced));
        eprintln!(
            "envelope correlation: no loss {clean:.3}, 10% loss with FEC/PLC {repaired:.3} \
             ({recovered} recovered by FEC, {concealed} concealed), 10% loss as silence {silenced:.3}"
        );
        assert!(clean > 0.95, "no loss {clean:.3}");
        assert!(repaired > 0.95, "with FEC/PLC {repaired:.3}");
        assert!(
            repaired > silenced + 0.05,
            "repair must beat silence: {repaired:.3} vs {silenced:.3}"
        );
        assert!(recovered > concealed, "single losses are rebuilt from FEC");
    }

    #[test]
    fn silence_is_sent_as_dtx() {
        let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut buffer = [0u8; MAX_PACKET];
        let dtx: Vec<bool> = (0..50)
            .map(|_| {
                encoder
                    .encode(&[0.0; SAMPLES_PER_FRAME], &mut buffer)
                    .unwrap()
                    .silent
            })
            .collect();
        // libopus switches to DTX after about 200 ms of silence and then
        // sends only a comfort-noise refresh every 400 ms.
        let first = dtx.iter().position(|&d| d).expect("DTX engaged");
        assert!(first <= 12, "DTX after {first} frames");
        let refreshes = dtx[first..].iter().filter(|&&d| !d).count();
        assert!(refreshes <= dtx[first..].len() / 15, "{dtx:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
        assert!(encoder.encode(&[0.0; 100], &mut [0u8; MAX_PACKET]).is_err());
        let mut decoder = OpusDecoder::new().unwrap();
        let mut pcm = [0f32; SAMPLES_PER_FRAME];
        assert!(decoder.decode(&[], &mut pcm).is_err());
        assert!(decoder.decode(&[0xff, 0xff, 0xff], &mut pcm).is_err());
    }
}
