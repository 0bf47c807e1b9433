// The SAP Gateway behaviours CAP does not have, in front of its OData V2 adapter:
// * authentication of a communication user (HTTP Basic) or an OAuth 2.0 client-credentials token;
// * the CSRF protocol: "x-csrf-token: Fetch" on a read returns a token bound to a session cookie; a write
//   without both is refused with 403 and "x-csrf-token: Required";
// * /peer/* test controls: forget every session (as a Gateway restart does), count the token fetches.
const cds = require("@sap/cds");
const crypto = require("crypto");
const cov2ap = require("@cap-js-community/odata-v2-adapter");

const USER = process.env.SAP_PEER_USER || "IRONBUS_COMM";
const PASSWORD = process.env.SAP_PEER_PASSWORD || "secret";
const CLIENT_ID = process.env.SAP_PEER_CLIENT_ID || "sb-ironbus";
const CLIENT_SECRET = process.env.SAP_PEER_CLIENT_SECRET || "client-secret";
const V2 = "/sap/opu/odata/sap/";
const COOKIE = "SAP_SESSIONID_IB1_100";

const sessions = new Map(); // session id -> csrf token
const bearer = new Set();
const stats = { csrfFetches: 0, tokenGrants: 0, refused: 0 };

function cookieOf(req) {
  const header = req.headers.cookie || "";
  for (const part of header.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === COOKIE) return rest.join("=");
  }
  return null;
}

function authenticated(req) {
  const auth = req.headers.authorization || "";
  if (auth.startsWith("Basic ")) {
    const [user, ...pw] = Buffer.from(auth.slice(6), "base64").toString().split(":");
    return user === USER && pw.join(":") === PASSWORD;
  }
  if (auth.startsWith("Bearer ")) return bearer.has(auth.slice(7));
  return false;
}

cds.on("bootstrap", (app) => {
  app.post("/oauth/token", require("express").urlencoded({ extended: false }), (req, res) => {
    let id = req.body.client_id, secret = req.body.client_secret;
    const auth = req.headers.authorization || "";
    if (auth.startsWith("Basic ")) [id, secret] = Buffer.from(auth.slice(6), "base64").toString().split(":");
    if (req.body.grant_type !== "client_credentials" || id !== CLIENT_ID || secret !== CLIENT_SECRET) {
      return res.status(401).json({ error: "invalid_client" });
    }
    const token = crypto.randomBytes(16).toString("hex");
    bearer.add(token);
    stats.tokenGrants++;
    res.json({ access_token: token, token_type: "bearer", expires_in: 43199 });
  });
  app.post("/peer/expire-sessions", (req, res) => { sessions.clear(); res.json(stats); });
  app.get("/peer/stats", (req, res) => res.json(stats));

  app.use(V2, (req, res, next) => {
    if (!authenticated(req)) {
      res.set("WWW-Authenticate", 'Basic realm="SAP NetWeaver Application Server [IB1/100]"');
      return res.status(401).send("Logon failed");
    }
    const fetch = (req.headers["x-csrf-token"] || "").toLowerCase() === "fetch";
    if (req.method === "GET" || req.method === "HEAD") {
      if (fetch) {
        let sid = cookieOf(req);
        if (!sid || !sessions.has(sid)) {
          sid = crypto.randomBytes(12).toString("hex");
          sessions.set(sid, crypto.randomBytes(12).toString("base64"));
          res.append("Set-Cookie", `${COOKIE}=${sid}; path=/; HttpOnly`);
          res.append("Set-Cookie", "sap-usercontext=sap-client=100; path=/");
        }
        stats.csrfFetches++;
        res.set("x-csrf-token", sessions.get(sid));
      }
      return next();
    }
    const sid = cookieOf(req);
    const token = req.headers["x-csrf-token"];
    if (!sid || !sessions.has(sid) || !token || sessions.get(sid) !== token) {
      stats.refused++;
      res.set("x-csrf-token", "Required");
      return res.status(403).type("text/plain").send("CSRF token validation failed");
    }
    next();
  });
  // The V2 adapter after the Gateway checks (its plugin mode would mount it first).
  // continueOnError: SAP Gateway answers every change set of a $batch, also after a failed one.
  app.use(cov2ap({ path: "sap/opu/odata/sap", target: "auto", continueOnError: true }));
});

module.exports = cds.server;
