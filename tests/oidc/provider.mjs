// A real OpenID provider (npm oidc-provider@9) for Sallyport's browser tests. Test use only:
// loopback only, in-memory storage, throw-away keys.
//
//   OIDC_PORT=PORT OIDC_CLIENT_ID=ID OIDC_CLIENT_SECRET=SECRET \
//   OIDC_REDIRECT_URIS=http://127.0.0.1:P/cb[,...] node tests/oidc/provider.mjs
//
// Prints `ready http://127.0.0.1:PORT` (the issuer) on stdout once it listens.
//
// One confidential client: client_secret_basic or client_secret_post, authorization_code,
// response_type code; PKCE (S256) is required: an authorization request without a
// code_challenge is refused (invalid_request), so a client that forgets PKCE fails its tests.
// Scopes openid, email (email, email_verified), profile (name, preferred_username), groups
// (groups: only with the `groups` scope). The ID token carries every granted claim
// (conformIdTokenClaims: false).
//
// Accounts (sub = login name): alice, bob, carol, dave (dave has no name claim); see ACCOUNTS.
// The password is not checked.
//
// Browser flow: every authorization request shows the login page (`prompt=login` is added
// when the request names no prompt, so a browser still signed in at the provider can sign in
// as someone else); a known login name redirects straight back to the client: consent is
// granted automatically, there is no consent page. The login page, GET /interaction/UID:
//   <form id="login-form" method="post" action="/interaction/UID">
//     <input id="login" type="text" name="login">             the login name, e.g. alice
//     <input id="password" type="password" name="password">  anything (may be empty)
//     <button id="sign-in" type="submit">Sign in</button>
// An unknown login name shows the login page again, with <p id="login-error">.
//
// Workload tokens (pipelines), optional: with OIDC_WORKLOAD_CLIENTS=sub1,sub2 (client ids that
// become the tokens' `sub`, e.g. `repo:acme/app:ref:refs/heads/main`), OIDC_WORKLOAD_AUDIENCE
// (an absolute URI) and OIDC_WORKLOAD_SECRET, each such client may ask
//   POST /token  grant_type=client_credentials&scope=deploy&client_id=SUB&client_secret=SECRET
// and receives an RS256 JWT access token {iss, sub: SUB, aud: AUDIENCE, exp (+300 s), jti, ...}
// signed with the provider's keys (published at its jwks_uri): the shape of a CI workload
// identity token.
//
// Provider cookies are named op_session, op_interaction, op_interaction_resume (so they do
// not clash with the application's cookies: cookies on 127.0.0.1 are shared across ports).
// They are not `Secure` over plain http, and SameSite=Lax.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const esc = (v) => String(v ?? '').replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
const port = Number.parseInt(env('OIDC_PORT'), 10);
const clientId = env('OIDC_CLIENT_ID');
const clientSecret = env('OIDC_CLIENT_SECRET');
const redirectUris = env('OIDC_REDIRECT_URIS').split(',').map((s) => s.trim()).filter(Boolean);
const issuer = `http://127.0.0.1:${port}`;
const workloadIds = (process.env.OIDC_WORKLOAD_CLIENTS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const workloadAudience = process.env.OIDC_WORKLOAD_AUDIENCE ?? '';
const workloadSecret = process.env.OIDC_WORKLOAD_SECRET ?? '';
const workloads = workloadIds.length > 0;
if (workloads && (!workloadAudience || !workloadSecret)) {
  console.error('provider.mjs: OIDC_WORKLOAD_CLIENTS needs OIDC_WORKLOAD_AUDIENCE and OIDC_WORKLOAD_SECRET');
  process.exit(2);
}

const ACCOUNTS = {
  alice: { email: 'alice@example.com', name: 'Alice Archer', groups: ['eng'] },
  bob: { email: 'bob@example.com', name: 'Bob Builder', groups: ['leads'] },
  carol: { email: 'carol@example.com', name: 'Carol Chen', groups: ['security'] },
  dave: { email: 'dave@example.com', groups: ['platform-admins'] }, // no name claim
};
const SCOPES = ['openid', 'email', 'profile', 'groups'];

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // client_secret_post is accepted for this client too (oidc-provider treats the two alike).
    token_endpoint_auth_method: 'client_secret_basic',
  }, ...workloadIds.map((id) => ({
    client_id: id,
    client_secret: workloadSecret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
  }))],
  scopes: SCOPES,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
    const a = ACCOUNTS[sub];
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: a.email,
          email_verified: true,
          ...(a.name ? { name: a.name } : {}),
          preferred_username: sub,
          groups: a.groups,
        };
      },
    };
  },
  // Auto-consent: every authorization gets a grant with all scopes, so no consent page.
  async loadExistingGrant(ctx) {
    const { provider, client, session, account } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await provider.Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== account.accountId || grant.clientId !== client.clientId) {
      grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
    }
    grant.addOIDCScope(SCOPES.join(' '));
    await grant.save();
    return grant;
  },
  // Every authorization request must carry PKCE (oidc-provider@9: `pkce.required`).
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: workloads },
    resourceIndicators: {
      enabled: workloads,
      // Only workload clients get the pipeline audience; sign-in flows are unchanged.
      defaultResource: (_ctx, client) => (client && workloadIds.includes(client.clientId) ? workloadAudience : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== workloadAudience) throw new Error(`unknown resource ${resource}`);
        return {
          scope: 'deploy',
          audience: workloadAudience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  cookies: {
    keys: [randomBytes(32).toString('hex')],
    names: {
      session: 'op_session',
      interaction: 'op_interaction',
      resume: 'op_interaction_resume',
    },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 86400,
    Grant: 86400,
  },
  renderError(ctx, out, error) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oidc error</title></head><body>
<h1 id="oidc-error">${esc(out.error)}</h1>
<p id="oidc-error-description">${esc(out.error_description)}</p>
</body></html>`;
    if (error) console.error('provider error:', error.message ?? error);
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error:', err));

function loginPage(uid, clientId, error) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test OpenID provider: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 24rem; margin: 3rem auto; padding: 0 1rem;">
<h1>Test OpenID provider</h1>
<p>Sign in to <code>${esc(clientId)}</code> as alice, bob, carol or dave.</p>
${error ? `<p id="login-error" style="color: #b00">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}" autocomplete="off">
  <p><input id="login" type="text" name="login" placeholder="login name" required autofocus></p>
  <p><input id="password" type="password" name="password" placeholder="password (any)"></p>
  <p><button id="sign-in" type="submit">Sign in</button></p>
</form>
</body></html>`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 65536) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// The interaction (login) pages; oidc-provider handles everything else.
async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'interaction mismatch');
  const clientId = details.params.client_id;
  if (details.prompt.name === 'consent') {
    // Not reached (loadExistingGrant grants everything), but should it be: grant and go on.
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId });
    grant.addOIDCScope(SCOPES.join(' '));
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') return send(res, 200, loginPage(uid, clientId));
  if (req.method !== 'POST') return send(res, 405, 'method not allowed');
  const login = ((await readBody(req)).get('login') ?? '').trim();
  if (!Object.hasOwn(ACCOUNTS, login)) {
    return send(res, 200, loginPage(uid, clientId, `unknown user: ${login}`));
  }
  return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const u = new URL(req.url ?? '/', issuer);
  const m = /^\/interaction\/([^/]+)$/.exec(u.pathname);
  if (m) {
    interaction(req, res, m[1]).catch((err) => {
      console.error('interaction error:', err);
      if (!res.headersSent) send(res, 400, `<p id="oidc-error">${esc(err.message)}</p>`);
    });
    return;
  }
  // One login per authorization request: add prompt=login unless the request names a prompt.
  if (req.method === 'GET' && u.pathname === '/auth' && !u.searchParams.has('prompt')) {
    u.searchParams.set('prompt', 'login');
    req.url = u.pathname + u.search;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
