//! The events the app pushes to the window, each a name with the type of its
//! payload. `ui/src/generated.ts` gets an `on<Name>` listener for every
//! constant here (see `typescript.rs`), so the window cannot listen for an
//! event the app does not send, or read its payload as another type.

use std::marker::PhantomData;

use serde::Serialize;
use tauri::{AppHandle, Emitter as _};

use kubesocks_managed::control::ConnectionActivity;

use crate::view::View;

/// An event name bound to its payload's type.
pub struct Event<T> {
    name: &'static str,
    payload: PhantomData<fn(&T)>,
}

impl<T: Serialize + Clone> Event<T> {
    const fn new(name: &'static str) -> Self {
        Event { name, payload: PhantomData }
    }

    /// Sends the event to every window.
    pub fn emit(&self, app: &AppHandle, payload: &T) -> tauri::Result<()> {
        app.emit(self.name, payload)
    }
}

/// What the window shows, pushed by the app on every change.
pub const VIEW: Event<View> = Event::new("view");

/// What started or stopped, wherever it came from (switch, tray menu or a terminal).
pub const ANNOUNCE: Event<String> = Event::new("announce");

/// What each connection's clients are doing (open connections, recent
/// failures, traffic), pushed about once a second while it changes.
pub const ACTIVITY: Event<Vec<ConnectionActivity>> = Event::new("activity");
