use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

fn full_profile() -> Profile {
    let mut profile = Profile {
        display_name: "Ada Lovelace".into(),
        last_server: Some(ServerChoice::Url {
            url: "wss://sfu.example.com/ws".into(),
        }),
        devices: Devices {
            camera: Some(SavedDevice {
                id: "/dev/video2".into(),
                name: "Logitech C920".into(),
            }),
            microphone: Some(SavedDevice {
                id: "alsa:hw:1,0".into(),
                name: "USB Mic".into(),
            }),
            speaker: None,
        },
        window: Some(WindowGeometry {
            x: 40,
            y: 30,
            width: 1280,
            height: 720,
            maximized: false,
        }),
        audio_processing: AudioProcessing {
            echo_cancellation: false,
            ..AudioProcessing::default()
        },
        ..Profile::default()
    };
    profile.remember_room("standup");
    profile.remember_room("design-review");
    profile
}

#[test]
fn round_trip_keeps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    let profile = full_profile();
    store.save(&profile).unwrap();
    let loaded = store.load();
    assert!(loaded.set_aside.is_none());
    assert!(loaded.migrated_from.is_none());
    assert_eq!(loaded.profile, profile);
    let text = fs::read_to_string(store.path()).unwrap();
    assert!(text.contains("schema_version = 2"), "{text}");
}

#[test]
fn no_file_gives_defaults_without_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = ProfileStore::new(dir.path().join("not-yet")).load();
    assert_eq!(loaded.profile, Profile::default());
    assert!(loaded.set_aside.is_none());
}

#[test]
fn schema_1_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    fs::write(
        store.path(),
        "name = \"Grace\"\nserver = \"host\"\nrooms = [\"retro\"]\ncamera = \"Integrated Camera\"\nmicrophone = \"Built-in Mic\"\n",
    )
    .unwrap();
    let loaded = store.load();
    assert_eq!(loaded.migrated_from, Some(1));
    let profile = loaded.profile;
    assert_eq!(profile.schema_version, SCHEMA_VERSION);
    assert_eq!(profile.display_name, "Grace");
    assert_eq!(profile.last_server, Some(ServerChoice::Host));
    assert_eq!(profile.recent_rooms, ["retro"]);
    let camera = profile.devices.camera.clone().unwrap();
    assert_eq!(camera.name, "Integrated Camera");
    // Name only: it finds the camera whatever its id is now.
    let present = [DeviceInfo {
        id: "/dev/video0".into(),
        name: "Integrated Camera".into(),
    }];
    assert_eq!(camera.resolve(&present).unwrap().id, "/dev/video0");
    // Saving writes the new schema.
    store.save(&profile).unwrap();
    let again = store.load();
    assert!(again.migrated_from.is_none());
    assert_eq!(again.profile, profile);
}

#[test]
fn corrupt_file_is_set_aside_and_defaults_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    let garbage = "display_name = \"Ada\"\n[devices\ncamera = ";
    fs::write(store.path(), garbage).unwrap();
    let loaded = store.load();
    assert_eq!(loaded.profile, Profile::default());
    let aside = loaded.set_aside.expect("a corrupt file is reported");
    assert!(aside.reason.contains("not valid TOML"), "{}", aside.reason);
    let name = aside.moved_to.file_name().unwrap().to_string_lossy();
    assert!(name.starts_with("profile.toml.corrupt-"), "{name}");
    // The user's data is kept for inspection, and the next start is clean.
    assert_eq!(fs::read_to_string(&aside.moved_to).unwrap(), garbage);
    assert!(!store.path().exists());
    assert!(store.load().set_aside.is_none());
}

#[test]
fn unusable_files_of_other_kinds_are_set_aside() {
    let cases: [(&[u8], &str); 4] = [
        (&[0xff, 0xfe, 0x00, 0x41], "not UTF-8"),
        (b"schema_version = 99\n", "newer than this build"),
        (b"schema_version = \"two\"\n", "not a number"),
        (b"display_name = 42\nschema_version = 2\n", "not valid TOML"),
    ];
    for (bytes, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(dir.path());
        fs::write(store.path(), bytes).unwrap();
        let loaded = store.load();
        let aside = loaded.set_aside.expect("set aside");
        assert!(aside.reason.contains(expected), "{}", aside.reason);
        assert_eq!(loaded.profile, Profile::default());
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    let huge = format!("display_name = \"{}\"\n", "x".repeat(70_000));
    fs::write(store.path(), huge).unwrap();
    let aside = store.load().set_aside.expect("too large");
    assert!(aside.reason.contains("larger than"), "{}", aside.reason);
}

#[test]
fn implausible_values_are_dropped_not_trusted() {
    let long = "n".repeat(600);
    let text = format!(
        "schema_version = 2\ndisplay_name = \"{long}\"\nrecent_rooms = [\"a\", \"\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\"]\n[window]\nx = 0\ny = 0\nwidth = 0\nheight = 600\n"
    );
    let profile = parse(&text).unwrap();
    assert_eq!(profile.display_name, "");
    assert_eq!(profile.recent_rooms.len(), MAX_RECENT_ROOMS);
    assert!(!profile.recent_rooms.contains(&String::new()));
    assert_eq!(profile.window, None);
}

#[test]
fn device_id_changed_but_name_matches() {
    let saved = SavedDevice {
        id: "/dev/video2".into(),
        name: "Logitech C920".into(),
    };
    let present = [
        DeviceInfo {
            id: "/dev/video0".into(),
            name: "Integrated Camera".into(),
        },
        DeviceInfo {
            id: "/dev/video4".into(),
            name: "Logitech C920".into(),
        },
    ];
    assert_eq!(saved.resolve(&present).unwrap().id, "/dev/video4");
    // The id wins when both are present, even if the name changed.
    let renamed = [DeviceInfo {
        id: "/dev/video2".into(),
        name: "HD Pro Webcam C920".into(),
    }];
    assert_eq!(saved.resolve(&renamed).unwrap().id, "/dev/video2");
    assert!(saved.resolve(&present[..1]).is_none());
}

#[test]
fn recent_rooms_are_most_recent_first_and_bounded() {
    let mut profile = Profile::default();
    for i in 0..12 {
        profile.remember_room(&format!("room-{i}"));
    }
    profile.remember_room("room-5");
    assert_eq!(profile.recent_rooms.len(), MAX_RECENT_ROOMS);
    assert_eq!(profile.recent_rooms[0], "room-5");
    assert_eq!(profile.recent_rooms[1], "room-11");
    assert_eq!(
        profile
            .recent_rooms
            .iter()
            .filter(|r| *r == "room-5")
            .count(),
        1
    );
}

/// A write cut short (the process killed between writing and renaming)
/// leaves only a temp file: the previous profile loads whole, and the
/// leftover is cleaned up.
#[test]
fn interrupted_write_leaves_the_previous_profile() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    let before = full_profile();
    store.save(&before).unwrap();
    let mut after = before.clone();
    after.display_name = "Someone Else".into();
    let text = toml::to_string_pretty(&after).unwrap();
    let half = &text.as_bytes()[..text.len() / 2];
    let temp = store.temp_path();
    fs::write(&temp, half).unwrap();

    let loaded = store.load();
    assert!(loaded.set_aside.is_none());
    assert_eq!(loaded.profile, before);
    assert!(!temp.exists(), "the stale temp file is removed");
}

/// Readers racing a writer only ever see a whole profile, old or new.
#[test]
fn concurrent_readers_never_see_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path());
    store.save(&full_profile()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut profile = full_profile();
            for i in 0..300 {
                profile.display_name = format!("Writer {i}");
                profile.remember_room(&format!("room-{i}"));
                store.save(&profile).unwrap();
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::Relaxed) {
        // Read the file directly: `load` would clean the writer's temp files.
        let text = fs::read_to_string(store.path()).unwrap();
        let profile = parse(&text).expect("always a whole profile");
        assert!(
            profile.display_name.starts_with("Ada") || profile.display_name.starts_with("Writer")
        );
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 0);
}

#[test]
fn save_into_an_unwritable_place_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    fs::write(&blocker, "not a directory").unwrap();
    let store = ProfileStore::new(blocker.join("profile"));
    let err = store.save(&Profile::default()).unwrap_err();
    assert!(matches!(err, ProfileError::Io { .. }), "{err}");
}
