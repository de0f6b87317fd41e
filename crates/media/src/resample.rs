//! Sample-rate conversion with rubato: whole clips (WAV files) and streams
//! (devices that do not run at 48 kHz).

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

#[derive(Debug, thiserror::Error)]
#[error("resampling: {0}")]
pub struct ResampleError(String);

fn err(e: impl std::fmt::Display) -> ResampleError {
    ResampleError(e.to_string())
}

/// Converts a whole mono clip to 48 kHz.
pub fn to_48k(mono: &[f32], rate: u32) -> Result<Vec<f32>, ResampleError> {
    convert(mono, rate, crate::frame::SAMPLE_RATE)
}

/// Converts a whole mono clip from one rate to another.
pub fn convert(mono: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == to {
        return Ok(mono.to_vec());
    }
    let mut resampler =
        Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input).map_err(err)?;
    let channels = [mono.to_vec()];
    let input = SequentialSliceOfVecs::new(&channels, 1, mono.len()).map_err(err)?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(err)?;
    Ok(output.take_data())
}

/// Converts a mono stream between fixed rates, 10 ms of input at a time.
#[derive(Debug)]
pub struct StreamResampler {
    resampler: Option<Fft<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    input: [Vec<f32>; 1],
    output: [Vec<f32>; 1],
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let chunk = (from / 100).max(1) as usize;
        let resampler = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(err)?,
            )
        };
        let out_len = resampler
            .as_ref()
            .map_or(chunk, Resampler::output_frames_max);
        Ok(Self {
            resampler,
            chunk,
            pending: Vec::with_capacity(chunk * 2),
            input: [vec![0.0; chunk]],
            output: [vec![0.0; out_len]],
        })
    }

    /// Feeds samples at the input rate; appends converted samples to `out`.
    pub fn process(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let Some(resampler) = self.resampler.as_mut() else {
            out.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        while self.pending.len() >= self.chunk {
            self.input[0].copy_from_slice(&self.pending[..self.chunk]);
            self.pending.drain(..self.chunk);
            let input = SequentialSliceOfVecs::new(&self.input, 1, self.chunk).map_err(err)?;
            let capacity = self.output[0].len();
            let mut output =
                SequentialSliceOfVecs::new_mut(&mut self.output, 1, capacity).map_err(err)?;
            let (_, written) = resampler
                .process_into_buffer(&input, &mut output, None)
                .map_err(err)?;
            out.extend_from_slice(&self.output[0][..written]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * hz / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn clips_keep_their_duration_and_level() {
        let out = to_48k(&tone(44_100, 1000.0, 1.0), 44_100).unwrap();
        assert!(out.len().abs_diff(48_000) < 600, "{}", out.len());
        let peak = out[4800..43_200].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.48..0.52).contains(&peak), "{peak}");
    }

    #[test]
    fn streams_convert_in_arbitrary_blocks() {
        let input = tone(44_100, 440.0, 1.0);
        let mut stream = StreamResampler::new(44_100, 48_000).unwrap();
        let mut out = Vec::new();
        for block in input.chunks(333) {
            stream.process(block, &mut out).unwrap();
        }
        assert!(out.len().abs_diff(48_000) < 600, "{}", out.len());
        let mut same = StreamResampler::new(48_000, 48_000).unwrap();
        let mut copy = Vec::new();
        same.process(&[0.25; 10], &mut copy).unwrap();
        assert_eq!(copy, [0.25; 10]);
    }
}
