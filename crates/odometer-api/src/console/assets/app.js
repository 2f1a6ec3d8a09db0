// The console's entry: the router (every /console path is this one page), sign-in and
// sign-out, the header. Pages draw themselves into <main> from the native API.

import { session, whenUnauthorized, ApiError } from './api.js';
import { h, clear, field, errorBox, announce } from './ui.js';
import * as metrics from './metrics.js';
import * as usage from './usage.js';
import * as events from './events.js';
import * as billing from './billing.js';

const routes = [
  [/^\/console\/?$/, home],
  [/^\/console\/sign-in$/, signIn],
  [/^\/console\/metrics$/, metrics.list],
  [/^\/console\/metrics\/new$/, metrics.create],
  [/^\/console\/metrics\/([^/]+)$/, metrics.detail],
  [/^\/console\/metrics\/([^/]+)\/edit$/, metrics.edit],
  [/^\/console\/metrics\/([^/]+)\/revisions$/, metrics.revisions],
  [/^\/console\/usage$/, usage.page],
  [/^\/console\/events$/, events.list],
  [/^\/console\/events\/view$/, events.detail],
  [/^\/console\/explain$/, events.explainPage],
  [/^\/console\/customers$/, billing.customers],
  [/^\/console\/customers\/([^/]+)$/, billing.customer],
  [/^\/console\/plans$/, billing.plans],
  [/^\/console\/plans\/([^/]+)$/, billing.plan],
  [/^\/console\/subscriptions$/, billing.subscriptions],
  [/^\/console\/subscriptions\/([^/]+)$/, billing.subscription],
];

const main = document.getElementById('main');
let renderCount = 0;

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

// What a page gets: its <main>, the path's captures, the query, and whether it is still the
// page on screen (a slow answer for a page the user left is dropped).
function context(captures) {
  const token = ++renderCount;
  return {
    main,
    params: captures.map(decodeURIComponent),
    query: new URLSearchParams(location.search),
    alive: () => token === renderCount,
    navigate,
    title(text) {
      document.title = `${text} · Odometer console`;
    },
  };
}

async function render() {
  const path = location.pathname;
  const signedIn = session.signedIn();
  showSession(signedIn);
  if (!signedIn && path !== '/console/sign-in') {
    sessionStorage.setItem('odometer.next', path + location.search);
    history.replaceState(null, '', '/console/sign-in');
    return render();
  }
  const found = routes.find(([pattern]) => pattern.test(path));
  markCurrent(path);
  const ctx = context(found ? path.match(found[0]).slice(1) : []);
  clear(main, h('p', { class: 'loading' }, 'Loading…'));
  try {
    if (!found) {
      ctx.title('Not found');
      clear(main, h('h1', {}, 'Not found'), h('p', {}, 'No console page has this address.'));
    } else {
      await found[1](ctx);
    }
  } catch (error) {
    if (!ctx.alive()) return;
    if (error instanceof ApiError && error.status === 401) return;
    clear(main, h('h1', {}, 'Something went wrong'), errorBox(error));
  }
  if (ctx.alive()) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      if (document.activeElement === document.body || !main.contains(document.activeElement)) {
        heading.focus({ preventScroll: true });
      }
    }
  }
}

function showSession(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('session').hidden = !signedIn;
  const organization = session.organization();
  document.getElementById('organization').textContent = organization
    ? `${organization.name} (${organization.id})`
    : '';
}

function markCurrent(path) {
  for (const a of document.querySelectorAll('#nav a')) {
    const here = path === a.pathname || path.startsWith(a.pathname + '/');
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function home(ctx) {
  ctx.navigate('/console/metrics', { replace: true });
}

async function signIn(ctx) {
  ctx.title('Sign in');
  if (session.signedIn()) return ctx.navigate('/console/metrics', { replace: true });
  const key = h('input', {
    type: 'password',
    name: 'api-key',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
  });
  const problem = h('div');
  // method=post: even if this script failed mid-way, a key would never go into a URL.
  const form = h(
    'form',
    { method: 'post', class: 'card narrow' },
    field('API key', key, {
      hint: 'An organization key (odo_…). It is kept in this browser tab only, until you sign out or close the tab.',
    }),
    problem,
    h('button', { type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clear(problem);
    try {
      const organization = await session.signIn(key.value.trim());
      key.value = '';
      announce(`Signed in to ${organization.name}`);
      const next = sessionStorage.getItem('odometer.next');
      sessionStorage.removeItem('odometer.next');
      ctx.navigate(next && next !== '/console/sign-in' ? next : '/console/metrics', { replace: true });
    } catch (error) {
      clear(
        problem,
        errorBox(
          error.status === 401
            ? { code: 'unauthorized', message: 'This key was not accepted.' }
            : error,
        ),
      );
      key.focus();
    }
  });
  clear(main, h('h1', {}, 'Sign in'), form);
  key.focus();
}

document.getElementById('sign-out').addEventListener('click', () => {
  session.signOut();
  announce('Signed out');
  navigate('/console/sign-in');
});

whenUnauthorized(() => {
  if (location.pathname !== '/console/sign-in') navigate('/console/sign-in', { replace: true });
});

// Links inside the console navigate without reloading; the key stays in sessionStorage
// either way.
document.addEventListener('click', (event) => {
  const a = event.target.closest && event.target.closest('a');
  if (!a || a.target || a.hasAttribute('download') || event.defaultPrevented) return;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  if (a.origin !== location.origin || !a.pathname.startsWith('/console')) return;
  if (a.pathname.startsWith('/console/assets/')) return;
  event.preventDefault();
  navigate(a.pathname + a.search);
});

window.addEventListener('popstate', render);
render();
