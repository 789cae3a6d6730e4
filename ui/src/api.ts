// The app's side of the window: commands it answers and events it pushes.
// Names match src-tauri/src/commands.rs.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

import type { ContextInfo, Live, Settings, Snapshot } from "./model";

export const snapshot = (): Promise<Snapshot> => invoke("snapshot");

/** Connects a context; resolves once it listens, rejects with the reason it could not. */
export const connect = (context: string): Promise<void> => invoke("connect", { context });

export const disconnect = (id: string): Promise<void> => invoke("disconnect", { id });

export const copyText = (text: string): Promise<void> => invoke("copy_text", { text });

export const openLogs = (): Promise<void> => invoke("open_logs");

export const saveSettings = (settings: Settings): Promise<Settings> => invoke("save_settings", { settings });

export interface ContextsChanged {
  contexts: ContextInfo[];
  kubeconfig_error: string | null;
  kubeconfig: string[];
}

export const reloadContexts = (): Promise<ContextsChanged> => invoke("reload_contexts");

/** Every change of the connections, pushed by the app as it happens. */
export const onLive = (handler: (live: Live) => void): Promise<UnlistenFn> =>
  listen<Live>("live", (event) => handler(event.payload));

export const onContexts = (handler: (changed: ContextsChanged) => void): Promise<UnlistenFn> =>
  listen<ContextsChanged>("contexts", (event) => handler(event.payload));
