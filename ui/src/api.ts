// The app's side of the window: commands it answers and events it pushes.
// Names match src-tauri/src/commands.rs and app.rs (`forward`); the types are
// generated from the Rust ones.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

import type { Settings, Snapshot, View } from "./generated";

export const snapshot = (): Promise<Snapshot> => invoke("snapshot");

/** Connects a context; resolves once it listens, rejects with the reason it could not. */
export const connect = (context: string): Promise<void> => invoke("connect", { context });

/** Stops a context's connection, or forgets its failed connect. */
export const disconnect = (context: string): Promise<void> => invoke("disconnect", { context });

export const copyText = (text: string): Promise<void> => invoke("copy_text", { text });

export const openLogs = (): Promise<void> => invoke("open_logs");

export const saveSettings = (settings: Settings): Promise<Settings> => invoke("save_settings", { settings });

/** Re-reads the kubeconfig; a change arrives as a new view. */
export const reloadContexts = (): Promise<void> => invoke("reload_contexts");

/** What the window shows, pushed by the app on every change. */
export const onView = (handler: (view: View) => void): Promise<UnlistenFn> =>
  listen<View>("view", (event) => handler(event.payload));

/** What started or stopped, wherever it came from (switch, tray menu or a terminal). */
export const onAnnounce = (handler: (text: string) => void): Promise<UnlistenFn> =>
  listen<string>("announce", (event) => handler(event.payload));
