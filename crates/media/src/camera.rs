//! Cameras through nokhwa (V4L2 on Linux, `AVFoundation`, Media Foundation),
//! converted to I420 by the `yuv` crate (and mozjpeg for MJPEG).

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, CameraInfo, FrameFormat, RequestedFormat,
    RequestedFormatType,
};
use yuv::{
    BufferStoreMut, YuvConversionMode, YuvPackedImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

use crate::device::{DeviceError, DeviceInfo, pick};
use crate::frame::{FramePool, VideoFrame};
use crate::scale::Size;

/// What the caller would like; the camera offers what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureRequest {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for CaptureRequest {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
        }
    }
}

fn camera_id(info: &CameraInfo) -> String {
    // The bus path (misc) survives renumbering of /dev/videoN; the index does not.
    let misc = info.misc();
    if misc.trim().is_empty() {
        format!("index:{}", info.index())
    } else {
        misc
    }
}

/// Cameras present now. A machine without cameras gives an empty list.
pub fn list_cameras() -> Result<Vec<DeviceInfo>, DeviceError> {
    Ok(query()?
        .iter()
        .map(|info| DeviceInfo {
            id: camera_id(info),
            name: info.human_name(),
        })
        .collect())
}

fn query() -> Result<Vec<CameraInfo>, DeviceError> {
    match nokhwa::query(ApiBackend::Auto) {
        Ok(cameras) => Ok(cameras),
        // V4L2 reports a missing /dev/video* as an error: that is "no cameras".
        Err(err) if err.to_string().contains("No such file") => Ok(Vec::new()),
        Err(err) => Err(DeviceError::Backend(err.to_string())),
    }
}

/// How well a format matches the request; higher is better.
fn score(format: &CameraFormat, want: CaptureRequest) -> Option<(bool, bool, i64, u8)> {
    let rank = match format.format() {
        FrameFormat::NV12 => 4,
        FrameFormat::YUYV => 3,
        FrameFormat::MJPEG => 2,
        FrameFormat::RAWRGB | FrameFormat::RAWBGR => 1,
        FrameFormat::GRAY => return None,
    };
    let (w, h) = (format.resolution().width(), format.resolution().height());
    if w < 2 || h < 2 {
        return None;
    }
    let fps_ok = format.frame_rate() >= want.fps;
    let big_enough = w >= want.width && h >= want.height;
    let area_gap =
        (i64::from(w) * i64::from(h) - i64::from(want.width) * i64::from(want.height)).abs();
    Some((fps_ok, big_enough, -area_gap, rank))
}

/// The best format for a request: the frame rate first (a smooth picture
/// matters more than a sharp one), then a size at least as large as asked
/// and closest to it, then the format cheapest to convert.
pub fn choose_format(available: &[CameraFormat], want: CaptureRequest) -> Option<CameraFormat> {
    available
        .iter()
        .filter_map(|f| score(f, want).map(|s| (s, *f)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, f)| f)
}

fn conversion_error(format: FrameFormat, err: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend(format!("converting a {format} frame: {err}"))
}

/// Converts one camera buffer of `source` size to I420 in `frame`, which is
/// `source` rounded down to even dimensions (I420 needs them). Row strides are
/// derived from the buffer length, so drivers that pad rows are read right.
/// `scratch` is reused for the RGB step of MJPEG.
pub fn to_i420(
    format: FrameFormat,
    source: Size,
    data: &[u8],
    frame: &mut VideoFrame,
    scratch: &mut Vec<u8>,
) -> Result<(), DeviceError> {
    let (width, height) = (frame.width(), frame.height());
    if width > source.width || height > source.height || source.height == 0 {
        return Err(conversion_error(
            format,
            "frame larger than the camera picture",
        ));
    }
    // Bytes per row as delivered (at least the packed row length).
    let stride = |bytes_per_pixel_x2: usize, rows_x2: usize| -> Result<u32, DeviceError> {
        let packed = source.width as usize * bytes_per_pixel_x2 / 2;
        let rows = source.height as usize * rows_x2 / 2;
        let stride = data.len() / rows.max(1);
        if stride < packed {
            return Err(conversion_error(
                format,
                format!(
                    "{} bytes for a {}x{} picture",
                    data.len(),
                    source.width,
                    source.height
                ),
            ));
        }
        Ok(stride as u32)
    };
    match format {
        FrameFormat::YUYV => {
            let yuy_stride = stride(4, 2)?;
            let packed = YuvPackedImage {
                yuy: data,
                yuy_stride,
                width,
                height,
            };
            yuv::yuyv422_to_yuv420(&mut planar(frame), &packed)
                .map_err(|e| conversion_error(format, e))
        }
        FrameFormat::NV12 => {
            // Luma rows, then half as many interleaved U,V rows, same stride.
            let row = stride(2, 3)? as usize;
            let (cols, lines) = (width as usize, height as usize);
            let chroma_start = row * source.height as usize;
            let (luma, cb, cr) = frame.planes_mut();
            for (dst, src) in luma
                .chunks_exact_mut(cols)
                .zip(data.chunks(row))
                .take(lines)
            {
                dst.copy_from_slice(&src[..cols]);
            }
            // Chroma is interleaved U,V pairs: split them, nothing to compute.
            let chroma_rows = data[chroma_start..].chunks(row).take(lines / 2);
            for ((u_row, v_row), src) in cb
                .chunks_exact_mut(cols / 2)
                .zip(cr.chunks_exact_mut(cols / 2))
                .zip(chroma_rows)
            {
                for ((pair, u), v) in src[..cols]
                    .chunks_exact(2)
                    .zip(u_row.iter_mut())
                    .zip(v_row.iter_mut())
                {
                    *u = pair[0];
                    *v = pair[1];
                }
            }
            Ok(())
        }
        FrameFormat::MJPEG => {
            scratch.resize(source.width as usize * source.height as usize * 3, 0);
            nokhwa::utils::buf_mjpeg_to_rgb(data, scratch, false)
                .map_err(|e| conversion_error(format, e))?;
            rgb_to_i420(&mut planar(frame), scratch, source.width * 3, format)
        }
        FrameFormat::RAWRGB => {
            let rgb_stride = stride(6, 2)?;
            rgb_to_i420(&mut planar(frame), data, rgb_stride, format)
        }
        FrameFormat::RAWBGR => {
            let bgr_stride = stride(6, 2)?;
            yuv::bgr_to_yuv420(
                &mut planar(frame),
                data,
                bgr_stride,
                YuvRange::Limited,
                YuvStandardMatrix::Bt601,
                YuvConversionMode::Balanced,
            )
            .map_err(|e| conversion_error(format, e))
        }
        FrameFormat::GRAY => Err(conversion_error(
            format,
            "greyscale cameras are not supported",
        )),
    }
}

/// The frame's planes as the `yuv` crate's destination image.
fn planar(frame: &mut VideoFrame) -> YuvPlanarImageMut<'_, u8> {
    let (width, height) = (frame.width(), frame.height());
    let (y, u, v) = frame.planes_mut();
    YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: width / 2,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: width / 2,
        width,
        height,
    }
}

fn rgb_to_i420(
    planar: &mut YuvPlanarImageMut<'_, u8>,
    rgb: &[u8],
    rgb_stride: u32,
    format: FrameFormat,
) -> Result<(), DeviceError> {
    yuv::rgb_to_yuv420(
        planar,
        rgb,
        rgb_stride,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
        YuvConversionMode::Balanced,
    )
    .map_err(|e| conversion_error(format, e))
}

/// An open camera delivering I420 frames.
pub struct CameraSource {
    camera: Camera,
    name: String,
    format: CameraFormat,
    pool: FramePool,
    scratch: Vec<u8>,
    bad_frames: u64,
}

/// Corrupt frames in a row after which the camera counts as broken.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 30;

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn open_error(name: &str, err: &nokhwa::NokhwaError) -> DeviceError {
    let text = err.to_string();
    if text.contains("busy") || text.contains("Busy") {
        DeviceError::Busy(name.to_owned())
    } else if text.contains("No such") {
        DeviceError::Disconnected(name.to_owned())
    } else {
        DeviceError::Backend(format!("{name}: {text}"))
    }
}

impl CameraSource {
    /// Opens the camera with this id (or, failing that, this name) in the
    /// format closest to `want`.
    pub fn open(
        id: &str,
        name: &str,
        want: CaptureRequest,
        pool: FramePool,
    ) -> Result<Self, DeviceError> {
        let cameras = query()?;
        let listed: Vec<DeviceInfo> = cameras
            .iter()
            .map(|info| DeviceInfo {
                id: camera_id(info),
                name: info.human_name(),
            })
            .collect();
        let chosen = pick(&listed, id, name).ok_or_else(|| DeviceError::NotFound {
            id: id.to_owned(),
            name: name.to_owned(),
        })?;
        let info = cameras
            .iter()
            .find(|c| camera_id(c) == chosen.id)
            .expect("picked from this list");
        let index: CameraIndex = info.index().clone();
        let any = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
        let mut camera = Camera::new(index, any).map_err(|e| open_error(&chosen.name, &e))?;
        let formats = camera
            .compatible_camera_formats()
            .map_err(|e| open_error(&chosen.name, &e))?;
        let format = choose_format(&formats, want).ok_or_else(|| DeviceError::Unsupported {
            device: chosen.name.clone(),
            detail: format!(
                "{} formats offered, none in a colour format we read",
                formats.len()
            ),
        })?;
        camera
            .set_camera_requset(RequestedFormat::new::<RgbFormat>(
                RequestedFormatType::Exact(format),
            ))
            .map_err(|e| open_error(&chosen.name, &e))?;
        camera
            .open_stream()
            .map_err(|e| open_error(&chosen.name, &e))?;
        tracing::info!(camera = %chosen.name, ?format, "camera open");
        Ok(Self {
            camera,
            name: chosen.name.clone(),
            format,
            pool,
            scratch: Vec::new(),
            bad_frames: 0,
        })
    }

    pub fn size(&self) -> Size {
        let resolution = self.format.resolution();
        Size::new(resolution.width(), resolution.height())
    }

    /// Frames skipped because they did not convert (corrupt MJPEG is common on USB).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// Blocks until the next good frame; stamps it with the time it arrived.
    pub fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let source = self.size();
        let format = self.format.format();
        let mut frame = self.pool.take(source.width & !1, source.height & !1);
        let mut bad_in_a_row = 0;
        loop {
            // `frame_raw` lends the driver's buffer instead of copying it.
            let data = self
                .camera
                .frame_raw()
                .map_err(|e| DeviceError::Disconnected(format!("{}: {e}", self.name)))?;
            let captured_at_us = crate::clock::unix_micros();
            match to_i420(format, source, &data, &mut frame, &mut self.scratch) {
                Ok(()) => {
                    frame.captured_at_us = captured_at_us;
                    return Ok(frame);
                }
                Err(err) => {
                    self.bad_frames += 1;
                    bad_in_a_row += 1;
                    if bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
                        self.pool.recycle(frame);
                        return Err(err);
                    }
                }
            }
        }
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        let _ = self.camera.stop_stream();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nokhwa::utils::Resolution;

    fn format(w: u32, h: u32, kind: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(w, h), kind, fps)
    }

    #[test]
    fn format_choice_prefers_frame_rate_then_size_then_cheap_formats() {
        let webcam = [
            format(1280, 720, FrameFormat::YUYV, 10),
            format(1280, 720, FrameFormat::MJPEG, 30),
            format(640, 480, FrameFormat::YUYV, 30),
            format(1920, 1080, FrameFormat::MJPEG, 30),
            format(640, 480, FrameFormat::GRAY, 60),
        ];
        let want = CaptureRequest::default();
        assert_eq!(choose_format(&webcam, want), Some(webcam[1]));
        let small = CaptureRequest {
            width: 640,
            height: 480,
            fps: 30,
        };
        assert_eq!(choose_format(&webcam, small), Some(webcam[2]));
        assert_eq!(
            choose_format(&[format(640, 480, FrameFormat::GRAY, 30)], want),
            None
        );
    }

    #[test]
    fn yuyv_nv12_and_rgb_convert_to_i420() {
        let (w, h) = (64u32, 32u32);
        let source = Size::new(w, h);
        let mut frame = VideoFrame::new(w, h);
        let mut scratch = Vec::new();
        // YUYV: Y0 U Y1 V for every two pixels.
        let yuyv: Vec<u8> = [100u8, 90, 110, 160].repeat((w * h / 2) as usize);
        to_i420(FrameFormat::YUYV, source, &yuyv, &mut frame, &mut scratch).unwrap();
        assert_eq!(&frame.y()[..4], &[100, 110, 100, 110]);
        assert!(frame.u().iter().all(|&u| u == 90) && frame.v().iter().all(|&v| v == 160));

        let luma = (w * h) as usize;
        let mut nv12 = vec![77u8; luma];
        nv12.extend([10u8, 200].repeat(luma / 4));
        to_i420(FrameFormat::NV12, source, &nv12, &mut frame, &mut scratch).unwrap();
        assert!(frame.y().iter().all(|&y| y == 77));
        assert!(frame.u().iter().all(|&u| u == 10) && frame.v().iter().all(|&v| v == 200));

        let grey = vec![128u8; luma * 3];
        to_i420(FrameFormat::RAWRGB, source, &grey, &mut frame, &mut scratch).unwrap();
        assert!(
            frame.y().iter().all(|&y| y.abs_diff(126) <= 2),
            "{:?}",
            &frame.y()[..4]
        );
        assert!(frame.u().iter().all(|&u| u.abs_diff(128) <= 1));
    }

    #[test]
    fn mjpeg_frames_decode_to_i420() {
        let (w, h) = (64usize, 48usize);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 30, 30]).collect();
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        compress.set_size(w, h);
        let mut started = compress.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&rgb).unwrap();
        let jpeg = started.finish().unwrap();
        let mut frame = VideoFrame::new(w as u32, h as u32);
        let source = Size::new(w as u32, h as u32);
        to_i420(
            FrameFormat::MJPEG,
            source,
            &jpeg,
            &mut frame,
            &mut Vec::new(),
        )
        .unwrap();
        // Red: Y ≈ 82, U below and V above neutral (BT.601, limited range).
        let (luma, cb, cr) = (frame.y()[100], frame.u()[50], frame.v()[50]);
        assert!(
            luma.abs_diff(82) < 8 && cb < 110 && cr > 190,
            "y {luma} u {cb} v {cr}"
        );
    }

    #[test]
    fn padded_rows_and_odd_sizes_are_read_right() {
        // A 66x34 YUYV picture whose driver pads each row to 160 bytes; the
        // frame keeps the even 66x34 picture without shearing.
        let source = Size::new(66, 34);
        let stride = 160;
        let mut data = vec![0u8; stride * 34];
        for (row, line) in data.chunks_mut(stride).enumerate() {
            for pair in line[..132].chunks_mut(4) {
                pair.copy_from_slice(&[row as u8 * 5, 128, row as u8 * 5, 128]);
            }
            line[132..].fill(255); // padding must not leak into the picture
        }
        let mut frame = VideoFrame::new(66, 34);
        to_i420(
            FrameFormat::YUYV,
            source,
            &data,
            &mut frame,
            &mut Vec::new(),
        )
        .unwrap();
        for row in 0..34 {
            assert!(
                frame.y()[row * 66..(row + 1) * 66]
                    .iter()
                    .all(|&y| y == row as u8 * 5),
                "row {row}"
            );
        }
        // An odd 65x33 RGB picture converts into a 64x32 frame.
        let odd = Size::new(65, 33);
        let rgb = vec![128u8; 65 * 33 * 3];
        let mut frame = VideoFrame::new(64, 32);
        to_i420(FrameFormat::RAWRGB, odd, &rgb, &mut frame, &mut Vec::new()).unwrap();
        assert!(frame.y().iter().all(|&y| y.abs_diff(126) <= 2));
    }

    #[test]
    fn cheaper_formats_win_a_tie() {
        let offered = [
            format(640, 480, FrameFormat::MJPEG, 30),
            format(640, 480, FrameFormat::YUYV, 30),
            format(640, 480, FrameFormat::NV12, 30),
            format(0, 0, FrameFormat::NV12, 60),
        ];
        let want = CaptureRequest {
            width: 640,
            height: 480,
            fps: 30,
        };
        assert_eq!(choose_format(&offered, want), Some(offered[2]));
        assert_eq!(choose_format(&offered[..2], want), Some(offered[1]));
    }

    #[test]
    fn truncated_or_corrupt_buffers_are_errors() {
        let source = Size::new(64, 32);
        let mut frame = VideoFrame::new(64, 32);
        let cases: [(FrameFormat, &[u8]); 4] = [
            (FrameFormat::YUYV, &[0; 10]),
            (FrameFormat::NV12, &[0; 10]),
            (FrameFormat::RAWRGB, &[0; 10]),
            (FrameFormat::MJPEG, &[0xff, 0xd8, 1, 2]),
        ];
        for (format, data) in cases {
            let result = to_i420(format, source, data, &mut frame, &mut Vec::new());
            assert!(result.is_err(), "{format}");
        }
    }

    #[test]
    fn no_cameras_here_means_an_empty_list_and_a_typed_error() {
        // This machine (and CI) has no camera; a machine that has one skips the checks.
        let cameras = list_cameras().unwrap();
        if !cameras.is_empty() {
            return;
        }
        let err = CameraSource::open(
            "usb-0:1",
            "Missing Cam",
            CaptureRequest::default(),
            FramePool::new(1),
        )
        .unwrap_err();
        assert_eq!(
            err,
            DeviceError::NotFound {
                id: "usb-0:1".into(),
                name: "Missing Cam".into()
            }
        );
    }

    #[test]
    #[ignore = "needs a camera"]
    fn a_real_camera_delivers_frames() {
        let camera = list_cameras()
            .unwrap()
            .into_iter()
            .next()
            .expect("a camera");
        let mut source = CameraSource::open(
            &camera.id,
            &camera.name,
            CaptureRequest::default(),
            FramePool::new(4),
        )
        .unwrap();
        for _ in 0..10 {
            let frame = source.next_frame().unwrap();
            assert!(frame.width() > 0 && frame.captured_at_us > 0);
        }
    }
}
