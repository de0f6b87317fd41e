//! Join links handed over by later starts of the app (see `instance`).
//! They reach the page as `open-link` events once it listens; one that
//! comes earlier waits here, and the page takes it with its start-up
//! information (`app_info`), so no link is lost to a page still loading.

use std::sync::{Mutex, PoisonError};

use tauri::{AppHandle, Emitter as _, Manager as _};

use crate::args::JoinLink;

#[derive(Debug, Default)]
pub struct LinkInbox {
    state: Mutex<Inbox>,
}

#[derive(Debug, Default)]
struct Inbox {
    handle: Option<AppHandle>,
    page_listens: bool,
    waiting: Option<JoinLink>,
    quitting: bool,
}

/// What became of a later start's hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Taken,
    /// The app is quitting: the later start should become the app.
    Quitting,
}

impl LinkInbox {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The window exists: links can bring it to the front.
    pub fn attach(&self, handle: AppHandle) {
        self.inbox().handle = Some(handle);
    }

    /// A later start's link (already checked), or none: it only asked for
    /// the window.
    pub fn deliver(&self, link: Option<JoinLink>) -> Delivery {
        let (handle, send_now) = {
            let mut inbox = self.inbox();
            if inbox.quitting {
                return Delivery::Quitting;
            }
            let send_now = match link {
                Some(link) if inbox.page_listens && inbox.handle.is_some() => Some(link),
                Some(link) => {
                    // The newest link is what the person clicked last.
                    inbox.waiting = Some(link);
                    None
                }
                None => None,
            };
            (inbox.handle.clone(), send_now)
        };
        // Outside the lock: window calls go through the main thread.
        if let Some(handle) = handle {
            if let Some(link) = send_now
                && let Err(err) = handle.emit("open-link", &link)
            {
                tracing::warn!(%err, "a handed-over link did not reach the page");
            }
            if let Some(window) = handle.get_webview_window("main") {
                let _ = window.unminimize();
                let _ = window.show();
                let _ = window.set_focus();
            }
        }
        Delivery::Taken
    }

    /// The page listens for `open-link` from now on; returns the link that
    /// came before it did, if any.
    pub fn page_listens(&self) -> Option<JoinLink> {
        let mut inbox = self.inbox();
        inbox.page_listens = true;
        inbox.waiting.take()
    }

    /// From now on later starts are told to become the app themselves.
    pub fn quitting(&self) {
        self.inbox().quitting = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(room: &str) -> JoinLink {
        JoinLink::parse(&format!("parley://join?server=ws://a/ws&room={room}")).unwrap()
    }

    #[test]
    fn a_link_before_the_page_listens_waits_and_the_newest_wins() {
        let inbox = LinkInbox::default();
        assert_eq!(inbox.deliver(Some(link("one"))), Delivery::Taken);
        assert_eq!(inbox.deliver(Some(link("two"))), Delivery::Taken);
        assert_eq!(inbox.page_listens().map(|l| l.room), Some("two".into()));
        assert_eq!(inbox.page_listens(), None, "taken once");
    }

    #[test]
    fn a_quitting_app_sends_later_starts_on() {
        let inbox = LinkInbox::default();
        inbox.quitting();
        assert_eq!(inbox.deliver(Some(link("r"))), Delivery::Quitting);
        assert_eq!(inbox.page_listens(), None);
    }
}
