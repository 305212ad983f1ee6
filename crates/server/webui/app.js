/*
 * taler-otp operator page: the OTP devices of one instance, through the HTTP API
 * (docs: the API contract, §1–§13). Vanilla ES2020, no framework, no build step.
 *
 * Security: the page is served with a strict Content-Security-Policy (no inline script, no
 * eval, Trusted Types without any policy), so this script builds every element with
 * createElement/textContent and never assigns HTML. The access token lives in
 * sessionStorage only (this browser tab); a token obtained with the password is revoked on
 * sign-out.
 *
 * Stable element ids for tests (WebDriver):
 *   #message              the message region (aria-live): errors in words, notices; empty when
 *                         there is none; data-kind "error" | "info" | "success";
 *                         #message-close dismisses it
 *   #login-view           the signed-out view
 *   #login-form           sign-in form: #login-instance (default "admin"),
 *                         #login-token (with or without "secret-token:"), #login-password
 *                         (used when #login-token is empty), #login-submit
 *   #app-view             the signed-in view; #session-instance names the instance
 *   #logout               sign out
 *   #device-list          the devices: one <li data-device-id="ID"> each, holding a button
 *                         that opens the device; #device-empty when there are none;
 *                         #devices-refresh reloads the list
 *   #add-form             add a device: #add-id, #add-description, #add-algorithm
 *                         (<select>, values 0–4), #add-generate (checkbox: generated key,
 *                         checked by default), #add-key (base32, shown when #add-generate is
 *                         unchecked), #add-counter (optional), #add-submit
 *   #enrolment            the once-shown panel after adding with a generated key:
 *                         #enrolment-key, #enrolment-uri, #enrolment-qr (<img>, PNG data URI),
 *                         #enrolment-done hides it and forgets the key
 *   #device-view          the selected device (data-device-id on it): #device-id,
 *                         #device-description, #device-algorithm, #device-counter
 *   #price-form           with-price algorithms only: #price-input (e.g. KUDOS:12.34),
 *                         #price-submit
 *   #code-current         the current code (TOTP: the middle of the five; HOTP: the next one)
 *   #code-all             TOTP: one <li data-offset="-2…2"> per code (class "current" on 0)
 *   #code-timestamp       the otp_timestamp of the shown code, as text (seconds)
 *   #code-countdown       TOTP: seconds to the next 30-s step ("Next code in 17 s")
 *   #code-note            explanation (no code, amount needed, HOTP counter)
 *   #code-refresh         fetch the code again
 *   #verify-form          #verify-code, #verify-reference, #verify-submit;
 *                         #verify-result (class "ok" | "bad"; data-verified "true" | "false";
 *                         data-reason "mismatch" | "replayed" | "locked"); #unlock-device
 *   #history-list         recent verification attempts (loaded when its section opens)
 *   #edit-form            #edit-description, #edit-submit
 *   #delete-device        asks for confirmation: #delete-confirmation with #delete-confirm,
 *                         #delete-cancel
 */
"use strict";

(() => {
  const STORAGE = {
    token: "taler-otp.token",
    instance: "taler-otp.instance",
    own: "taler-otp.own-token",
  };

  /** Algorithm numbers (§3) and their labels. */
  const ALGORITHMS = new Map([
    [0, "None (no codes)"],
    [1, "TOTP without price"],
    [2, "TOTP with price"],
    [3, "HOTP without price"],
    [4, "HOTP with price"],
  ]);
  const isTotp = (alg) => alg === 1 || alg === 2;
  const isHotp = (alg) => alg === 3 || alg === 4;
  const withPrice = (alg) => alg === 2 || alg === 4;

  const STEP = 30; // seconds per TOTP step
  const AMOUNT_RE = /^[A-Z]{1,11}:[0-9]+(\.[0-9]{1,8})?$/;
  const KEY_RE = /^[A-Z2-7]+={0,6}$/;
  const MAX_CTR = (1n << 63n) - 1n;
  const TOKEN_SECONDS = 3600;

  /** The API's root: the page lives at ROOT/webui/. */
  const API_ROOT = new URL("../", window.location.href);

  const $ = (id) => document.getElementById(id);

  /** The signed-in session: { instance, token, own }. */
  let session = null;
  /** The device on show: { id, details, price, offset, timers, generation }. */
  let current = null;
  let currency = "KUDOS";
  let messageTimer = 0;

  // ---------------------------------------------------------------- storage

  function storageGet(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  function storageSet(key, value) {
    try {
      window.sessionStorage.setItem(key, value);
    } catch (_) {
      // Storage disabled: the session lasts as long as the page.
    }
  }

  function storageClear() {
    try {
      for (const key of Object.values(STORAGE)) window.sessionStorage.removeItem(key);
    } catch (_) {
      // Nothing stored.
    }
  }

  // ---------------------------------------------------------------- HTTP

  /** A non-2xx answer; `body` is the Taler error `{code, hint, detail?}` when there is one. */
  class ApiFailure extends Error {
    constructor(status, statusText, body, retryAfter) {
      super(`HTTP ${status}`);
      this.status = status;
      this.statusText = statusText;
      this.body = body && typeof body === "object" ? body : null;
      this.retryAfter = retryAfter;
    }
    get code() {
      return this.body && typeof this.body.code === "number" ? this.body.code : null;
    }
  }

  /** The request never got an answer (server down, network, CORS, aborted). */
  class NetworkFailure extends Error {}

  /** A mistake in what the user typed, found before asking the server. */
  class InputProblem extends Error {}

  /** Percent-encodes one path segment. */
  const seg = (value) => encodeURIComponent(value);

  /** A path under the signed-in instance (or `instance`). */
  function instancePath(rest, instance) {
    return `instances/${seg(instance ?? session.instance)}/${rest}`;
  }

  /**
   * Calls the API. `options.body` is an object (sent as JSON) or a ready JSON string;
   * `options.token` / `options.basic` override the session's credentials; `options.anonymous`
   * sends none. Resolves to { status, data, headers, t0, t1 } for 2xx answers.
   */
  async function api(method, path, options = {}) {
    const headers = { Accept: "application/json" };
    let body;
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    }
    if (options.basic) {
      headers.Authorization = `Basic ${options.basic}`;
    } else if (!options.anonymous) {
      const token = options.token ?? (session && session.token);
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    const url = new URL(path, API_ROOT).toString();
    const t0 = Date.now();
    let res;
    let text;
    try {
      res = await fetch(url, {
        method,
        headers,
        body,
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      text = await res.text();
    } catch (err) {
      throw new NetworkFailure(err && err.message ? err.message : String(err));
    }
    const t1 = Date.now();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      throw new ApiFailure(res.status, res.statusText, data, res.headers.get("Retry-After"));
    }
    return { status: res.status, data, headers: res.headers, t0, t1 };
  }

  /** Words for a failure: the server's hint and detail, or what went wrong on the way. */
  function describe(err) {
    if (err instanceof ApiFailure) {
      const parts = [];
      if (err.body && typeof err.body.hint === "string" && err.body.hint) {
        parts.push(err.body.hint);
      } else {
        parts.push(`The server answered ${err.status}${err.statusText ? ` ${err.statusText}` : ""}.`);
      }
      if (err.body && err.body.detail !== undefined && err.body.detail !== null && err.body.detail !== "") {
        parts.push(`Detail: ${err.body.detail}.`);
      }
      if (err.retryAfter) parts.push(`Try again in ${err.retryAfter} s.`);
      const code = err.code !== null ? `, error code ${err.code}` : "";
      return `${parts.join(" ")} (HTTP ${err.status}${code})`;
    }
    if (err instanceof NetworkFailure) {
      return `Could not reach the server: ${err.message || "network error"}. Check the connection and try again.`;
    }
    if (err instanceof InputProblem) return err.message;
    return `Something went wrong in the page: ${err && err.message ? err.message : String(err)}`;
  }

  /**
   * Shows a failure of `what` ("Loading the devices"). A 401 while signed in means the token
   * is no longer valid: back to the sign-in form.
   */
  function fail(what, err) {
    if (err instanceof ApiFailure && err.status === 401 && session) {
      endSession(false);
      showMessage(`The server no longer accepts this session's token: ${describe(err)} Please sign in again.`, "error");
      return;
    }
    const prefix = err instanceof InputProblem ? "" : `${what} failed. `;
    showMessage(prefix + describe(err), "error");
  }

  // ---------------------------------------------------------------- messages

  function showMessage(text, kind = "info") {
    const box = $("message-box");
    const message = $("message");
    window.clearTimeout(messageTimer);
    box.className = `message ${kind}`;
    message.dataset.kind = kind;
    message.setAttribute("aria-live", kind === "error" ? "assertive" : "polite");
    message.textContent = text;
    $("message-close").hidden = false;
    if (kind !== "error") {
      messageTimer = window.setTimeout(clearMessage, 8000);
    }
  }

  function clearMessage() {
    window.clearTimeout(messageTimer);
    $("message-box").className = "message empty";
    $("message").textContent = "";
    delete $("message").dataset.kind;
    $("message-close").hidden = true;
  }

  /** Runs `task` with `button` disabled and marked busy. */
  async function busy(button, task) {
    const wasDisabled = button.disabled;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      return await task();
    } finally {
      button.disabled = wasDisabled;
      button.removeAttribute("aria-busy");
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatTime(seconds) {
    const date = new Date(seconds * 1000);
    if (Number.isNaN(date.getTime())) return "";
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // ---------------------------------------------------------------- sign in / out

  /** `secret-token:` + the token, whether or not it was typed with the prefix. */
  function normaliseToken(raw) {
    const token = raw.trim().replace(/^bearer\s+/i, "");
    return token.toLowerCase().startsWith("secret-token:") ? `secret-token:${token.slice(13)}` : `secret-token:${token}`;
  }

  /** Base64 of `user:password` in UTF-8, for HTTP Basic. */
  function basicCredentials(user, password) {
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return window.btoa(binary);
  }

  async function onLogin(event) {
    event.preventDefault();
    clearMessage();
    const instance = $("login-instance").value.trim() || "admin";
    const tokenRaw = $("login-token").value.trim();
    const password = $("login-password").value;
    if (!tokenRaw && !password) {
      showMessage("Type an access token or the instance's password.", "error");
      $("login-token").focus();
      return;
    }
    await busy($("login-submit"), async () => {
      try {
        let token;
        let own = false;
        if (tokenRaw) {
          token = normaliseToken(tokenRaw);
          // Check the token now rather than on the first click.
          await api("GET", instancePath("private/otp-devices", instance), { token });
        } else {
          const res = await api("POST", instancePath("private/token", instance), {
            basic: basicCredentials(instance, password),
            body: {
              scope: "write",
              duration: { d_us: TOKEN_SECONDS * 1000000 },
              description: "taler-otp operator page",
            },
          });
          token = res.data && res.data.access_token;
          if (typeof token !== "string" || !token) {
            throw new InputProblem("The server answered without an access token.");
          }
          own = true;
        }
        session = { instance, token, own };
        storageSet(STORAGE.token, token);
        storageSet(STORAGE.instance, instance);
        storageSet(STORAGE.own, own ? "1" : "0");
        $("login-token").value = "";
        $("login-password").value = "";
        await enterApp(true);
      } catch (err) {
        if (err instanceof ApiFailure && err.status === 401) {
          showMessage(
            `${tokenRaw ? "This access token is not valid" : "Wrong password"} for instance “${instance}”. ${describe(err)}`,
            "error",
          );
        } else if (err instanceof ApiFailure && err.code === 2000) {
          showMessage(`There is no instance “${instance}”. ${describe(err)}`, "error");
        } else {
          fail("Signing in", err);
        }
      }
    });
  }

  async function enterApp(focus) {
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("session").hidden = false;
    $("session-instance").textContent = session.instance;
    loadConfig();
    await loadDevices();
    if (focus && session) $("devices-title").focus();
  }

  /** Forgets the session; `revoke`: also revoke a token this page obtained. */
  function endSession(revoke) {
    const ending = session;
    if (revoke && ending && ending.own) {
      api("DELETE", instancePath("private/token", ending.instance), { token: ending.token }).catch(() => {});
    }
    session = null;
    storageClear();
    closeDevice();
    hideEnrolment();
    $("device-list").replaceChildren();
    $("app-view").hidden = true;
    $("session").hidden = true;
    $("login-view").hidden = false;
    if (ending) $("login-instance").value = ending.instance;
  }

  function onLogout() {
    endSession(true);
    showMessage("Signed out.", "info");
    $("login-title").focus();
  }

  /** The currency, for the amount examples; failures only keep the default. */
  async function loadConfig() {
    try {
      const { data } = await api("GET", instancePath("config"), { anonymous: true });
      if (data && typeof data.currency === "string" && /^[A-Z]{1,11}$/.test(data.currency)) {
        currency = data.currency;
        $("price-input").placeholder = `${currency}:12.34`;
        $("price-example").textContent = `${currency}:12.34`;
      }
    } catch (_) {
      // Only cosmetic.
    }
  }

  // ---------------------------------------------------------------- device list

  async function loadDevices() {
    try {
      const { data } = await api("GET", instancePath("private/otp-devices"));
      renderDevices(data && Array.isArray(data.otp_devices) ? data.otp_devices : []);
    } catch (err) {
      fail("Loading the devices", err);
    }
  }

  function renderDevices(devices) {
    const list = $("device-list");
    const items = devices.map((device) => {
      const id = String(device.otp_device_id);
      const li = el("li");
      li.dataset.deviceId = id;
      const button = el("button", "device-button");
      button.type = "button";
      button.append(el("span", "device-name", id), el("span", "device-desc", String(device.device_description ?? "")));
      if (current && current.id === id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openDevice(id));
      li.append(button);
      return li;
    });
    list.replaceChildren(...items);
    $("device-empty").hidden = devices.length > 0;
  }

  function markSelected() {
    for (const li of $("device-list").children) {
      const button = li.firstElementChild;
      if (!button) continue;
      if (current && li.dataset.deviceId === current.id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  // ---------------------------------------------------------------- add

  function onGenerateToggle() {
    const generate = $("add-generate").checked;
    $("add-key-field").hidden = generate;
    if (!generate) $("add-key").focus();
  }

  async function onAdd(event) {
    event.preventDefault();
    clearMessage();
    try {
      const id = $("add-id").value.trim();
      const description = $("add-description").value.trim();
      const algorithm = Number($("add-algorithm").value);
      const generate = $("add-generate").checked;
      const counterRaw = $("add-counter").value.trim();
      if (!id) throw new InputProblem("Type the device's id.");
      if (id.includes("/") || id.length > 128) {
        throw new InputProblem("A device id has at most 128 characters and no “/”.");
      }
      if (!description) throw new InputProblem("Type a description of the device.");
      if (!ALGORITHMS.has(algorithm)) throw new InputProblem("Choose an algorithm.");
      const body = { otp_device_id: id, otp_device_description: description, otp_algorithm: algorithm };
      if (generate) {
        if (algorithm === 0) {
          throw new InputProblem(
            "A device with algorithm “None” computes no codes, so there is no key to generate: type a key, or choose another algorithm.",
          );
        }
      } else {
        const key = $("add-key").value.replace(/\s+/g, "").toUpperCase();
        if (!key) throw new InputProblem("Type the device's key, or let the server generate one.");
        if (!KEY_RE.test(key)) {
          throw new InputProblem("The key must be base32: letters A–Z and digits 2–7 only.");
        }
        if (key.replace(/=+$/, "").length < 16) {
          throw new InputProblem("The key is too short: at least 16 base32 characters (80 bits).");
        }
        body.otp_key = key;
      }
      let json = JSON.stringify(body);
      if (counterRaw) {
        if (!/^[0-9]+$/.test(counterRaw) || BigInt(counterRaw) > MAX_CTR) {
          throw new InputProblem("The counter must be a whole number from 0 to 9223372036854775807.");
        }
        // Spliced in as digits: JSON numbers above 2^53 would lose precision in JavaScript.
        json = `${json.slice(0, -1)},"otp_ctr":${BigInt(counterRaw).toString()}}`;
      }
      await busy($("add-submit"), async () => {
        const res = await api("POST", instancePath("private/otp-devices"), { body: json });
        $("add-form").reset();
        onGenerateToggleQuiet();
        await loadDevices();
        // openDevice clears the message synchronously: show the new one after it.
        if (res.status === 200 && res.data && typeof res.data.otp_key === "string") {
          openDevice(id, false);
          showEnrolment(id, algorithm, res.data);
          showMessage(`Device “${id}” added. Save its key now: it is shown only once.`, "success");
        } else {
          openDevice(id, true);
          showMessage(`Device “${id}” added.`, "success");
        }
      });
    } catch (err) {
      fail("Adding the device", err);
    }
  }

  function onGenerateToggleQuiet() {
    $("add-key-field").hidden = $("add-generate").checked;
  }

  // ---------------------------------------------------------------- enrolment

  function showEnrolment(id, algorithm, data) {
    $("enrolment-device").textContent = id;
    $("enrolment-key").textContent = data.otp_key;
    $("enrolment-uri").textContent = typeof data.otp_uri === "string" ? data.otp_uri : "";
    const open = $("enrolment-open");
    if (typeof data.otp_uri === "string" && data.otp_uri.startsWith("otpauth://")) {
      open.href = data.otp_uri;
      open.hidden = false;
    } else {
      open.removeAttribute("href");
      open.hidden = true;
    }
    const qr = $("enrolment-qr");
    if (typeof data.qr_code_png === "string" && /^[A-Za-z0-9+/=\s]+$/.test(data.qr_code_png)) {
      qr.src = `data:image/png;base64,${data.qr_code_png.replace(/\s+/g, "")}`;
      qr.alt = `QR code of the authenticator URI (with the key) of device ${id}`;
      qr.hidden = false;
    } else {
      qr.removeAttribute("src");
      qr.alt = "";
      qr.hidden = true;
    }
    $("enrolment-price-note").hidden = !withPrice(algorithm);
    const panel = $("enrolment");
    panel.hidden = false;
    $("enrolment-title").focus();
    panel.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function hideEnrolment() {
    $("enrolment").hidden = true;
    $("enrolment-key").textContent = "";
    $("enrolment-uri").textContent = "";
    $("enrolment-device").textContent = "";
    const qr = $("enrolment-qr");
    qr.removeAttribute("src");
    qr.alt = "";
    $("enrolment-open").removeAttribute("href");
  }

  async function copyText(id, what) {
    const text = $(id).textContent;
    try {
      await navigator.clipboard.writeText(text);
      showMessage(`${what} copied to the clipboard.`, "success");
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents($(id));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      showMessage(`The browser does not allow copying here: the ${what.toLowerCase()} is selected, copy it with the keyboard.`, "info");
    }
  }

  // ---------------------------------------------------------------- one device

  function stopTimers() {
    if (!current) return;
    window.clearTimeout(current.refreshTimer);
    window.clearInterval(current.tickTimer);
    current.refreshTimer = 0;
    current.tickTimer = 0;
  }

  function closeDevice() {
    stopTimers();
    current = null;
    $("device-view").hidden = true;
    $("device-placeholder").hidden = false;
    markSelected();
  }

  function resetDeviceView(id) {
    $("device-view").dataset.deviceId = id;
    $("device-id").textContent = id;
    $("device-description").textContent = "";
    $("device-algorithm").textContent = "…";
    $("device-counter").textContent = "…";
    $("code-current").textContent = "–";
    $("code-all").replaceChildren();
    $("code-all").hidden = true;
    $("code-note").textContent = "Loading…";
    $("code-timer").hidden = true;
    $("code-timestamp").textContent = "–";
    $("code-time").textContent = "";
    $("verify-result").textContent = "";
    $("verify-result").className = "result";
    $("verify-code").value = "";
    $("verify-reference").value = "";
    $("unlock-device").hidden = true;
    $("delete-confirmation").hidden = true;
    $("delete-device").hidden = false;
    $("history-list").replaceChildren();
    $("history-empty").hidden = true;
    for (const details of $("device-view").querySelectorAll("details")) details.open = false;
  }

  async function openDevice(id, focus = true) {
    clearMessage();
    stopTimers();
    const keepPrice = current && current.id === id ? current.price : "";
    current = { id, details: null, price: keepPrice, offset: 0, refreshTimer: 0, tickTimer: 0, generation: 0 };
    resetDeviceView(id);
    $("price-input").value = keepPrice;
    $("device-placeholder").hidden = true;
    $("device-view").hidden = false;
    markSelected();
    if (focus) {
      $("device-title").focus({ preventScroll: true });
      $("device-view").scrollIntoView({ block: "start", behavior: "smooth" });
    }
    await refreshCode();
  }

  /** Fetches the device (with the amount, if any) and shows its code. */
  async function refreshCode() {
    const device = current;
    if (!device) return;
    window.clearTimeout(device.refreshTimer);
    const generation = ++device.generation;
    const alg = device.details ? device.details.otp_algorithm : null;
    const params = new URLSearchParams();
    if (device.price && (alg === null || withPrice(alg))) params.set("price", device.price);
    const query = params.toString();
    const path = instancePath(`private/otp-devices/${seg(device.id)}`) + (query ? `?${query}` : "");
    try {
      const res = await api("GET", path);
      if (current !== device || generation !== device.generation) return;
      renderDevice(device, res);
    } catch (err) {
      if (current !== device || generation !== device.generation) return;
      $("code-note").textContent = `No code: ${describe(err)}`;
      if (err instanceof ApiFailure && err.status === 404 && err.code === 2021) {
        fail("Loading the device", err);
        closeDevice();
        loadDevices();
        return;
      }
      fail("Loading the device's code", err);
      if (err instanceof NetworkFailure && device.details && isTotp(device.details.otp_algorithm)) {
        device.refreshTimer = window.setTimeout(refreshCode, 5000);
      }
    }
  }

  function renderDevice(device, res) {
    const data = res.data || {};
    const alg = Number(data.otp_algorithm);
    device.details = data;
    $("device-description").textContent = String(data.device_description ?? "");
    if (document.activeElement !== $("edit-description")) {
      $("edit-description").value = String(data.device_description ?? "");
    }
    $("device-algorithm").textContent = ALGORITHMS.get(alg) ?? `unknown (${data.otp_algorithm})`;
    $("device-counter").textContent = String(data.otp_ctr ?? "–");
    $("delete-name").textContent = device.id;

    const priced = withPrice(alg);
    $("price-form").hidden = !priced;
    $("verify-price-note").hidden = !priced;
    $("verify-form").closest("details").hidden = alg === 0;
    $("code-panel").hidden = false;

    const ts = Number(data.otp_timestamp);
    // Server clock minus browser clock, taking the middle of the round trip.
    device.offset = Number.isFinite(ts) ? ts - (res.t0 + res.t1) / 2000 : 0;
    $("code-timestamp").textContent = Number.isFinite(ts) ? String(ts) : "–";
    $("code-time").textContent = Number.isFinite(ts) ? `(${formatTime(ts)})` : "";

    const codeAll = $("code-all");
    codeAll.replaceChildren();
    codeAll.hidden = true;
    $("code-timer").hidden = true;
    window.clearInterval(device.tickTimer);

    const code = typeof data.otp_code === "string" ? data.otp_code : null;
    if (alg === 0) {
      $("code-current").textContent = "–";
      $("code-note").textContent = "Algorithm “None”: this device issues no codes.";
      return;
    }
    if (code === null) {
      $("code-current").textContent = "–";
      $("code-note").textContent = priced
        ? `This device's codes depend on the amount: type one above (such as ${currency}:12.34).`
        : "The server gave no code for this device.";
      if (priced && document.activeElement !== $("price-input")) $("price-input").focus({ preventScroll: true });
      return;
    }
    if (isTotp(alg)) {
      const codes = code.split("\n");
      const middle = Math.floor(codes.length / 2);
      $("code-current").textContent = codes[middle] ?? code;
      codes.forEach((value, index) => {
        const offset = index - middle;
        const li = el("li", offset === 0 ? "current" : "");
        li.dataset.offset = String(offset);
        if (offset === 0) li.setAttribute("aria-current", "true");
        const label = offset === 0 ? "now" : `${offset > 0 ? "+" : "−"}${Math.abs(offset) * STEP} s`;
        li.append(el("span", "offset", label), el("span", "value", value));
        codeAll.append(li);
      });
      codeAll.hidden = false;
      $("code-note").textContent = device.price
        ? `Codes for ${device.price}, 30-second steps; the device accepts its neighbours too.`
        : "Codes change every 30 seconds; the small ones are the neighbouring steps.";
      startCountdown(device, ts);
    } else if (isHotp(alg)) {
      $("code-current").textContent = code;
      $("code-note").textContent =
        `Next code, for counter ${data.otp_ctr}${device.price ? ` and ${device.price}` : ""}. ` +
        "It changes once a confirmation or a verification uses it.";
    } else {
      $("code-current").textContent = code;
      $("code-note").textContent = "";
    }
  }

  /** Ticks the countdown to the next step and fetches the new codes when it starts. */
  function startCountdown(device, ts) {
    const nextStep = (Math.floor(ts / STEP) + 1) * STEP;
    const serverNow = () => Date.now() / 1000 + device.offset;
    const progress = $("code-progress");
    const countdown = $("code-countdown");
    let shown = -1;
    const tick = () => {
      const left = Math.max(0, Math.ceil(nextStep - serverNow()));
      if (left !== shown) {
        shown = left;
        countdown.textContent = left > 0 ? `Next code in ${left} s` : "Fetching the next code…";
        progress.value = Math.min(STEP, Math.max(0, STEP - left));
      }
    };
    tick();
    $("code-timer").hidden = false;
    device.tickTimer = window.setInterval(tick, 250);
    const delay = Math.max(1000, (nextStep - serverNow()) * 1000 + 300);
    device.refreshTimer = window.setTimeout(refreshCode, delay);
  }

  function readAmount() {
    const amount = $("price-input").value.trim().toUpperCase();
    if (!amount) return "";
    if (!AMOUNT_RE.test(amount)) {
      throw new InputProblem(
        `“${amount}” is not an amount: write CURRENCY:VALUE, such as ${currency}:12.34 (up to 8 decimals, no spaces).`,
      );
    }
    return amount;
  }

  async function onPrice(event) {
    event.preventDefault();
    if (!current) return;
    clearMessage();
    try {
      const amount = readAmount();
      $("price-input").value = amount;
      current.price = amount;
      await busy($("price-submit"), refreshCode);
    } catch (err) {
      fail("Showing the code", err);
    }
  }

  // ---------------------------------------------------------------- verify

  function setVerifyResult(text, ok, reason) {
    const box = $("verify-result");
    box.className = `result ${ok ? "ok" : "bad"}`;
    box.dataset.verified = ok ? "true" : "false";
    if (reason) box.dataset.reason = reason;
    else delete box.dataset.reason;
    box.textContent = text;
  }

  async function onVerify(event) {
    event.preventDefault();
    const device = current;
    if (!device) return;
    clearMessage();
    const box = $("verify-result");
    box.textContent = "";
    box.className = "result";
    try {
      const code = $("verify-code").value.replace(/\s+/g, "");
      if (!/^[0-9]{8}$/.test(code)) throw new InputProblem("A code is exactly 8 digits.");
      const body = { code };
      const alg = device.details ? device.details.otp_algorithm : null;
      if (alg !== null && withPrice(alg)) {
        const amount = readAmount();
        if (!amount) throw new InputProblem(`This device's codes depend on the amount: type it above (such as ${currency}:12.34).`);
        body.price = amount;
      }
      const reference = $("verify-reference").value.trim();
      if (reference) body.reference = reference;
      await busy($("verify-submit"), async () => {
        const path = instancePath(`private/otp-devices/${seg(device.id)}/verifications`);
        const { data } = await api("POST", path, { body });
        if (data && data.verified === true) {
          const how =
            data.otp_ctr !== undefined
              ? ` (counter ${data.otp_ctr})`
              : data.matched_offset !== undefined
                ? ` (${data.matched_offset === 0 ? "current step" : `step ${data.matched_offset > 0 ? "+" : ""}${data.matched_offset}`})`
                : "";
          setVerifyResult(`✓ Verified${how}.`, true, null);
          $("unlock-device").hidden = true;
        } else if (data && data.reason === "replayed") {
          const ref = data.reference ? ` for “${data.reference}”` : "";
          setVerifyResult(`✗ Not verified: this code was already accepted${ref}. A code counts once.`, false, "replayed");
        } else {
          setVerifyResult("✗ Not verified: the code does not match.", false, (data && data.reason) || "mismatch");
        }
        $("verify-code").value = "";
      });
      if (current === device && device.details && isHotp(device.details.otp_algorithm)) await refreshCode();
      if ($("history-section").open) loadHistory();
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 429) {
        const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s, or unlock the device.` : "";
        const hint = err.body && err.body.hint ? err.body.hint : "Too many wrong codes.";
        setVerifyResult(`Locked: ${hint}${wait}`, false, "locked");
        $("unlock-device").hidden = false;
        showMessage(`Verification refused. ${describe(err)}`, "error");
      } else {
        fail("Verifying the code", err);
      }
      if ($("history-section").open) loadHistory();
    }
  }

  async function onUnlock() {
    const device = current;
    if (!device) return;
    try {
      await busy($("unlock-device"), () =>
        api("POST", instancePath(`private/otp-devices/${seg(device.id)}/unlock`)),
      );
      $("unlock-device").hidden = true;
      setVerifyResult("Unlocked: codes can be verified again.", true, null);
      delete $("verify-result").dataset.verified;
      showMessage(`Device “${device.id}” unlocked.`, "success");
    } catch (err) {
      fail("Unlocking the device", err);
    }
  }

  async function loadHistory() {
    const device = current;
    if (!device) return;
    const list = $("history-list");
    try {
      const path = instancePath(`private/otp-devices/${seg(device.id)}/verifications`) + "?limit=10";
      const { data } = await api("GET", path);
      if (current !== device) return;
      const entries = data && Array.isArray(data.verifications) ? data.verifications : [];
      list.replaceChildren(
        ...entries.map((entry) => {
          const li = el("li", `outcome-${String(entry.outcome)}`);
          li.append(
            el("span", "when", formatTime(Number(entry.time))),
            el("span", "what", String(entry.outcome)),
            el("span", "ref", entry.reference ? String(entry.reference) : ""),
          );
          return li;
        }),
      );
      $("history-empty").hidden = entries.length > 0;
    } catch (err) {
      if (current !== device) return;
      list.replaceChildren(el("li", "muted", `Could not load the attempts: ${describe(err)}`));
    }
  }

  // ---------------------------------------------------------------- edit, delete

  async function onEdit(event) {
    event.preventDefault();
    const device = current;
    if (!device) return;
    clearMessage();
    const description = $("edit-description").value.trim();
    if (!description) {
      showMessage("Type a description.", "error");
      $("edit-description").focus();
      return;
    }
    try {
      await busy($("edit-submit"), () =>
        api("PATCH", instancePath(`private/otp-devices/${seg(device.id)}`), {
          body: { otp_device_description: description },
        }),
      );
      showMessage(`Description of “${device.id}” saved.`, "success");
      await loadDevices();
      if (current === device) await refreshCode();
    } catch (err) {
      fail("Saving the description", err);
    }
  }

  function onDeleteAsk() {
    if (!current) return;
    $("delete-name").textContent = current.id;
    $("delete-confirmation").hidden = false;
    $("delete-device").hidden = true;
    $("delete-cancel").focus();
  }

  function onDeleteCancel() {
    $("delete-confirmation").hidden = true;
    $("delete-device").hidden = false;
    $("delete-device").focus();
  }

  async function onDeleteConfirm() {
    const device = current;
    if (!device) return;
    clearMessage();
    try {
      await busy($("delete-confirm"), () =>
        api("DELETE", instancePath(`private/otp-devices/${seg(device.id)}`)),
      );
      if (current === device) closeDevice();
      showMessage(`Device “${device.id}” deleted.`, "success");
      await loadDevices();
      $("devices-title").focus();
    } catch (err) {
      fail("Deleting the device", err);
    }
  }

  // ---------------------------------------------------------------- start

  function on(id, type, handler) {
    const node = $(id);
    if (node) node.addEventListener(type, handler);
  }

  function start() {
    window.addEventListener("error", (event) => {
      showMessage(`Something went wrong in the page: ${event.message || "unknown error"}`, "error");
    });
    window.addEventListener("unhandledrejection", (event) => {
      showMessage(describe(event.reason), "error");
    });

    on("login-form", "submit", onLogin);
    on("logout", "click", onLogout);
    on("message-close", "click", clearMessage);
    on("devices-refresh", "click", () => {
      clearMessage();
      busy($("devices-refresh"), loadDevices);
    });
    on("add-form", "submit", onAdd);
    on("add-generate", "change", onGenerateToggle);
    on("enrolment-done", "click", () => {
      hideEnrolment();
      showMessage("The key is no longer shown.", "info");
      if (current) $("device-title").focus();
    });
    on("enrolment-copy-key", "click", () => copyText("enrolment-key", "Key"));
    on("enrolment-copy-uri", "click", () => copyText("enrolment-uri", "URI"));
    on("device-close", "click", () => {
      closeDevice();
      $("devices-title").focus();
    });
    on("price-form", "submit", onPrice);
    on("code-refresh", "click", () => {
      clearMessage();
      if (current) busy($("code-refresh"), refreshCode);
    });
    on("verify-form", "submit", onVerify);
    on("unlock-device", "click", onUnlock);
    on("history-section", "toggle", () => {
      if ($("history-section").open) loadHistory();
    });
    on("edit-form", "submit", onEdit);
    on("delete-device", "click", onDeleteAsk);
    on("delete-cancel", "click", onDeleteCancel);
    on("delete-confirm", "click", onDeleteConfirm);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("delete-confirmation").hidden) onDeleteCancel();
    });
    document.addEventListener("visibilitychange", () => {
      // Timers are throttled in hidden tabs: catch up when the tab shows again.
      if (document.visibilityState === "visible" && current && current.details && isTotp(current.details.otp_algorithm)) {
        refreshCode();
      }
    });

    onGenerateToggleQuiet();
    const token = storageGet(STORAGE.token);
    const instance = storageGet(STORAGE.instance);
    if (token && instance) {
      session = { instance, token, own: storageGet(STORAGE.own) === "1" };
      enterApp(false);
    } else {
      $("login-instance").focus();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
