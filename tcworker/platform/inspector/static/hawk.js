// Hawk request signing in the browser, as Taskcluster clients do it, with SubtleCrypto's
// HMAC-SHA256 (no library, nothing downloaded). The access token stays in the page: only the MAC
// travels. Header MAC input (Hawk 1, "header" type):
//   hawk.1.header \n ts \n nonce \n METHOD \n path?query \n host \n port \n payload-hash \n ext \n
// Temporary credentials put {"certificate": ...} base64-encoded into ext, as the official
// clients do. SubtleCrypto exists only in secure contexts: https, or http on localhost /
// 127.0.0.1, which is where the platform listens by default.
(function (global) {
  "use strict";

  const encoder = new TextEncoder();

  function base64(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return global.btoa(text);
  }

  function available() {
    return Boolean(global.crypto && global.crypto.subtle && global.isSecureContext !== false);
  }

  async function hmacSha256(key, text) {
    const cryptoKey = await global.crypto.subtle.importKey(
      "raw", encoder.encode(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return base64(await global.crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text)));
  }

  async function payloadHash(contentType, payload) {
    const text = "hawk.1.payload\n" + contentType + "\n" + payload + "\n";
    return base64(await global.crypto.subtle.digest("SHA-256", encoder.encode(text)));
  }

  function nonce() {
    const bytes = new Uint8Array(9);
    global.crypto.getRandomValues(bytes);
    return base64(bytes).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function ext(credentials) {
    if (!credentials.certificate) return "";
    const cert = typeof credentials.certificate === "string"
      ? JSON.parse(credentials.certificate) : credentials.certificate;
    return base64(encoder.encode(JSON.stringify({ certificate: cert })));
  }

  // Characters Hawk allows inside a quoted header attribute (no quote, no backslash).
  const ATTRIBUTE = /^[ \w!#$%&'()*+,\-./:;<=>?@[\]^`{|}~]*$/;

  /**
   * The Authorization header value for one request.
   * opts: {method, url, credentials: {clientId, accessToken, certificate?},
   *        contentType?, payload? (string, hashed when given), ts?, nonce?}
   */
  async function header(opts) {
    if (!available()) {
      throw new Error("this page is not a secure context (use https, or http://127.0.0.1 / " +
        "localhost, e.g. through an SSH tunnel): the browser offers no SubtleCrypto to sign requests");
    }
    const credentials = opts.credentials;
    if (!credentials.clientId || !credentials.accessToken) throw new Error("clientId and accessToken are needed");
    if (!ATTRIBUTE.test(credentials.clientId)) throw new Error("clientId contains characters Hawk cannot carry");
    const url = new URL(opts.url, global.location.href);
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    const ts = String(opts.ts !== undefined ? opts.ts : Math.floor(Date.now() / 1000));
    const n = opts.nonce !== undefined ? opts.nonce : nonce();
    const hash = opts.payload === undefined || opts.payload === null
      ? "" : await payloadHash(opts.contentType || "", opts.payload);
    const extValue = ext(credentials);
    const normalized = ["hawk.1.header", ts, n, opts.method.toUpperCase(), url.pathname + url.search,
      url.hostname.toLowerCase(), port, hash, extValue, ""].join("\n");
    const mac = await hmacSha256(credentials.accessToken, normalized);
    let value = `Hawk id="${credentials.clientId}", ts="${ts}", nonce="${n}"`;
    if (hash) value += `, hash="${hash}"`;
    if (extValue) value += `, ext="${extValue}"`;
    return value + `, mac="${mac}"`;
  }

  global.tcHawk = { header, available };
})(window);
