//! What the capture facade says about devices, whatever their kind.

/// A device as the user sees it. `id` is what the platform uses and may
/// change between runs (a camera plugged into another port, a renumbered
/// ALSA card); `name` is what people recognise, and the fallback.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
}

/// Why a device could not be used. Never a panic: devices come and go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no device with id `{id}` or name `{name}`")]
    NotFound { id: String, name: String },
    #[error("{0} is in use by another program")]
    Busy(String),
    #[error("{0} was disconnected")]
    Disconnected(String),
    #[error("{device} offers no usable format: {detail}")]
    Unsupported { device: String, detail: String },
    #[error("device error: {0}")]
    Backend(String),
}

/// Picks the device with this id, or else the one with this name.
pub fn pick<'a>(devices: &'a [DeviceInfo], id: &str, name: &str) -> Option<&'a DeviceInfo> {
    devices
        .iter()
        .find(|d| !id.is_empty() && d.id == id)
        .or_else(|| devices.iter().find(|d| !name.is_empty() && d.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn id_first_then_name() {
        let devices = [
            info("usb-1", "Logitech C920"),
            info("usb-2", "Integrated Camera"),
        ];
        assert_eq!(
            pick(&devices, "usb-2", "Logitech C920").unwrap().id,
            "usb-2"
        );
        // The id changed after a replug; the name still matches.
        assert_eq!(
            pick(&devices, "usb-9", "Logitech C920").unwrap().id,
            "usb-1"
        );
        assert!(pick(&devices, "usb-9", "Unknown").is_none());
        assert!(pick(&devices, "", "").is_none());
    }
}
