// The window's side of the app: the types it gets, the commands it calls
// and the events it listens for, generated from their Rust definitions by
// src-tauri/src/typescript.rs. Do not edit: after changing one of those, run
//   KUBESOCKS_BLESS=1 cargo test -p kubesocks-tray generated

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

/** Where a connection is in its life. */
export type ConnState = "resolving" | "opening" | "open" | "half_closed" | "closing";

/** What the clients of one managed connection are doing. */
export type ConnectionActivity = {
  /** The connection's ID. */
  id: string,
  /** Its context. */
  context: string,
  /** The open connections, newest first (at most 500). */
  open: Array<OpenConnection>,
  /** How many are open, listed or not. */
  open_count: number,
  /** The latest refused or failed connections, newest first (at most 200). */
  failures: Array<FailedConnection>,
  /** The failures kept, counted by reason, the most common first. */
  reasons: Array<ReasonCount>,
  /** Traffic per second over the last five minutes, oldest first. */
  traffic: Array<TrafficSecond>,
};

/**
 * A managed connection as `status` and the tray show it: its record and
 * its live figures, side by side in one JSON object.
 */
export type ConnectionStatus = {
  /** `socks5h://ADDR`, for clients that resolve names through the proxy. */
  socks_url: string | null,
  /** `http://ADDR`. */
  http_url: string | null,
  /** The PAC file for browsers, on the SOCKS (mixed) port, else the HTTP one. */
  pac_url: string | null,
  id: string,
  context: string,
  server: string,
  namespace: string,
  /** The connection's own kubeconfig (`kubeconfig/<id>.yaml`). */
  kubeconfig: string,
  /** The kubeconfig files it was made from. */
  source_kubeconfigs: Array<string>,
  socks: string | null,
  http: string | null,
  /** The DNS helper's address (UDP and TCP), if it has one. */
  dns: string | null,
  /** How names resolve, so a `connect` asking otherwise is told apart. */
  cluster_domain: string,
  passthrough: boolean,
  /** The DNS label that picks it on the shared port (`web.shop.<alias>`). */
  alias: string,
  /** The process hosting the connection (the daemon or the tray app). */
  pid: number,
  log: string,
  /** Seconds since the Unix epoch. */
  started_at: number,
  /** Client connections open now. */
  active_connections: number,
  /** Client connections since the engine started. */
  total_connections: number,
  /** Bytes from clients to the cluster. */
  bytes_up: number,
  /** Bytes from the cluster to clients. */
  bytes_down: number,
  /** The latest connection that could not be made, or that failed. */
  last_error: ErrorReport | null,
  /** The port-forward protocol connections use, once one has worked. */
  portforward_protocol: Protocol | null,
  /** Whether the watch caches are fed: connected, reconnecting or degraded. */
  health: HealthState,
};

/**
 * What the settings page starts a field at: the engine's defaults. The HTTP
 * port is offered when HTTP is switched on, though HTTP is off by default.
 */
export type Defaults = {
  /** The first SOCKS port tried. */
  socks_port: number,
  /** The first HTTP port tried. */
  http_port: number,
  /** The DNS helper's port offered when it is switched on. */
  dns_port: number,
  /** The shared port offered when it is switched on. */
  shared_port: number,
  /** The cluster DNS domain. */
  cluster_domain: string,
};

/** The last thing that went wrong, and when. */
export type ErrorReport = {
  /** One line: the target and the reason (see [`crate::error_chain`]). */
  message: string,
  /** Seconds since the Unix epoch. */
  at: number,
};

/** A connection that was refused or failed. */
export type FailedConnection = {
  /** When, in milliseconds since the Unix epoch. */
  at_ms: number,
  /** Its ID, as its log lines say. */
  id: number,
  /** The local program that asked; none when unknown. */
  program: Program | null,
  /** The client's address. */
  client: string,
  /** How it asked. */
  via: Via,
  /** Whether it came through the port shared by every context. */
  shared_port: boolean,
  /** The name or address and port asked for. */
  asked: string,
  /** Why, as the log says it and the client was told. */
  reason: string,
};

/** A context's health, as `status` and the tray show it. */
export type HealthState = { "state": "connected" } | { "state": "syncing", 
/**
 * Which watch: its kind and scope.
 */
watch: string, } | { "state": "reconnecting", 
/**
 * Seconds since the Unix epoch.
 */
since: number, 
/**
 * The latest failure, one line.
 */
error: string, } | { "state": "degraded", 
/**
 * Which watch: its kind and scope.
 */
watch: string, 
/**
 * Seconds since the Unix epoch.
 */
since: number, 
/**
 * Its latest failure, one line.
 */
error: string, };

/** What the tray icon shows. */
export type Icon = "idle" | "connected" | "error";

/** One open client connection, as listed. */
export type OpenConnection = {
  /** Its ID, as its log lines say (`conn=7`). */
  id: number,
  /**
   * The local program that opened it; none when unknown (another
   * user's, another machine's, or not found yet).
   */
  program: Program | null,
  /** The client's address. */
  client: string,
  /** How it asked. */
  via: Via,
  /** Whether it came through the port shared by every context. */
  shared_port: boolean,
  /** The name or address and port asked for. */
  asked: string,
  /** What that turned out to be (`service shop/web:80`), once resolved. */
  reached: string | null,
  /** The pod port it is forwarded to (`shop/web-5d8f:8080`), once open. */
  pod: string | null,
  /** The node that pod runs on, when the caches know it. */
  node: string | null,
  /** The port-forward protocol it uses, once open. */
  protocol: Protocol | null,
  /** Bytes from the client to the cluster. */
  bytes_up: number,
  /** Bytes from the cluster to the client. */
  bytes_down: number,
  /** When it was accepted, in milliseconds since the Unix epoch. */
  opened_at_ms: number,
  /** How long it has been open, in milliseconds. */
  age_ms: number,
  /** Where it is in its life. */
  state: ConnState,
};

/** A local process. */
export type Program = {
  /** Its PID. */
  pid: number,
  /** Its name (`/proc/PID/comm`: at most 15 bytes). */
  name: string,
};

/** A data-path protocol of `pods/portforward`. */
export type Protocol = "tunnel" | "spdy" | "websocket";

/** How many of the failures kept share one reason. */
export type ReasonCount = {
  /** The reason. */
  reason: string,
  /** How many failures kept gave it. */
  count: number,
};

/** One context as the user sees it. */
export type Row = {
  /** The context's name. */
  name: string,
  /** Its API server. */
  server: string,
  /** Its namespace. */
  namespace: string,
  /** Whether it is the kubeconfig's current context. */
  current: boolean,
  /**
   * False for a connection whose context this kubeconfig lacks (started
   * from a terminal with another kubeconfig).
   */
  in_kubeconfig: boolean,
  /** Where it stands. */
  state: RowState,
  /** Whether its switch (in the tray: its check mark) is on. */
  switched_on: boolean,
  /** Its connection, when connected. */
  connection: ConnectionStatus | null,
  /** Why it is failing or failed, while it is. */
  error: string | null,
  /**
   * "The kubeconfig entry changed since it was connected", when it did;
   * the window then offers to reconnect it. None for a context this
   * kubeconfig lacks, which it could not reconnect.
   */
  outdated: string | null,
  /** The socks5h:// URL to give clients; none without a SOCKS listener. */
  url: string | null,
  /** The PAC file's URL to give browsers. */
  pac_url: string | null,
  /**
   * The alias its names end in on the shared port unless one is set:
   * its name made a DNS label.
   */
  default_alias: string,
};

/** Where a context stands. */
export type RowState = "off" | "connecting" | "on" | "failing" | "reconnecting" | "degraded" | "failed";

/** What new connections listen on and resolve with, and what the app does at login and at start. */
export type Settings = {
  /** First SOCKS port tried; the next free one is taken when it is busy. */
  socks_port: number,
  /** Serve an HTTP proxy too, from this port on; none: SOCKS only. */
  http_port: number | null,
  /** The DNS suffix of the cluster's Service names. */
  cluster_domain: string,
  /**
   * Dial names outside the cluster from this machine instead of refusing
   * them, so a browser given the socks5h URL keeps the rest of the web.
   */
  passthrough: boolean,
  /** Answer DNS for cluster names, from this port on (UDP and TCP); none: off. */
  dns_port: number | null,
  /** One port for every connected context (`web.shop.<alias>`); none: off. */
  shared_port: number | null,
  /** The context that names without an alias go to on the shared port. */
  default_context: string | null,
  /**
   * The alias a context's names end in on the shared port, where it is
   * not the context's name made a DNS label (context → alias).
   */
  aliases: { [key in string]: string },
  /** Start the app in the tray at login. */
  start_at_login: boolean,
  /** Connect at start the contexts that were switched on in the app when it quit. */
  reconnect_at_start: boolean,
};

/** The shared port as `status` shows it. */
export type SharedPortStatus = {
  /** Where it listens (SOCKS5, HTTP and the PAC file on one port). */
  addr: string,
  /** `socks5h://ADDR`. */
  socks_url: string,
  /** Its PAC file, covering every connected context. */
  pac_url: string,
  /** The context names without an alias go to, if any. */
  default_context: string | null,
};

/** Everything the window needs to draw itself the first time. */
export type Snapshot = {
  view: View,
  settings: Settings,
  /** What the settings page offers where a setting is off or empty. */
  defaults: Defaults,
  /** The folder "Open log folder" opens. */
  log_dir: string,
  /** The app's version. */
  version: string,
};

/** One second of traffic. */
export type TrafficSecond = {
  /** The second it ended at, in seconds since the Unix epoch. */
  at: number,
  /** Bytes from clients to the cluster. */
  bytes_up: number,
  /** Bytes from the cluster to clients. */
  bytes_down: number,
  /** Client connections opened. */
  opened: number,
};

/** How a client asked for its connection. */
export type Via = "socks5" | "http_connect" | "http";

/** Everything the window shows apart from the settings, pushed on every change. */
export type View = {
  /** The kubeconfig's contexts in its order, then connected contexts it lacks. */
  rows: Array<Row>,
  /** The one-line summary under the window's title. */
  headline: string,
  /** What the tray icon shows. */
  icon: Icon,
  /** The kubeconfig files the contexts come from (`~/.kube/config`). */
  kubeconfig: Array<string>,
  /** Why the kubeconfig could not be read, if it could not. */
  kubeconfig_error: string | null,
  /** The port shared by every connected context, if open. */
  shared_port: SharedPortStatus | null,
};

// The commands (src-tauri/src/commands.rs).

/** Everything the window needs to draw itself the first time. */
export const snapshot = (): Promise<Snapshot> => invoke("snapshot");

/** Connects a context; resolves once it listens, rejects with the reason it could not. */
export const connect = (context: string): Promise<void> => invoke("connect", { context });

/** Stops a context's connection, or forgets its failed connect. */
export const disconnect = (context: string): Promise<void> => invoke("disconnect", { context });

/** Puts text on the clipboard. */
export const copyText = (text: string): Promise<void> => invoke("copy_text", { text });

/** Opens the log folder in the file manager. */
export const openLogs = (): Promise<void> => invoke("open_logs");

/** Saves the settings; resolves with them as stored. */
export const saveSettings = (settings: Settings): Promise<Settings> => invoke("save_settings", { settings });

/** Re-reads the kubeconfig; a change arrives as a new view. */
export const reloadContexts = (): Promise<void> => invoke("reload_contexts");

/** What each connection's clients are doing now; changes arrive as `activity` events. */
export const activity = (): Promise<Array<ConnectionActivity>> => invoke("activity");

/** Closes client connection `client` of connection `id`: both sides are reset. */
export const closeClient = (id: string, client: number): Promise<void> => invoke("close_client", { id, client });

// The events the app pushes (src-tauri/src/events.rs).

/** What the window shows, pushed by the app on every change. */
export const onView = (handler: (payload: View) => void): Promise<UnlistenFn> =>
  listen<View>("view", (event) => handler(event.payload));

/** What started or stopped, wherever it came from (switch, tray menu or a terminal). */
export const onAnnounce = (handler: (payload: string) => void): Promise<UnlistenFn> =>
  listen<string>("announce", (event) => handler(event.payload));

/**
 * What each connection's clients are doing (open connections, recent
 * failures, traffic), pushed about once a second while it changes.
 */
export const onActivity = (handler: (payload: Array<ConnectionActivity>) => void): Promise<UnlistenFn> =>
  listen<Array<ConnectionActivity>>("activity", (event) => handler(event.payload));
