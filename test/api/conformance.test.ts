// GraphQL over HTTP conformance: every server audit of the `graphql-http` package, one test each,
// on both paths a request can take:
//  - "listener": a real node:http server on `yoga.listener` (127.0.0.1, port 0) with the global
//    fetch, as production serves it: the fast lane (fastLane.ts) answers what it can and hands
//    the rest to yoga, so this covers both and the hand-over;
//  - "yoga": graphql-yoga's full pipeline through `yoga.fetch`, which the fast lane hands to.
import { serverAudits, type AuditRequirement } from 'graphql-http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../harness/app.js';

// Audits that kvql does not pass, by id, each with why. A MUST may never be here (a failing MUST
// is a bug to fix in the server), and each entry is asserted to still fail, so one that starts
// to pass is noticed and removed. Empty: kvql passes every MUST, SHOULD and MAY audit of
// graphql-http 1.23.1.
const NOT_PASSING: Readonly<Record<string, string>> = {};

let app: TestApp;

beforeAll(async () => {
  app = await createTestApp('conformance');
});

afterAll(async () => {
  await app.close();
});

// CSRF prevention (on by default, README "Security") asks a GET for a header that only a script
// can set; a client of the protocol sends it, as Apollo's and yoga's own clients do. Without it a
// GET gets 403 CSRF_HEADER_REQUIRED (test/api/browser.test.ts).
const withCsrfHeader = (init?: RequestInit): RequestInit => {
  const headers = new Headers(init?.headers);
  headers.set('x-graphql-yoga-csrf', '1');
  return { ...init, headers };
};

// The app only exists once beforeAll ran; the audits ask for the url and fetch when they run.
const paths = {
  listener: serverAudits({ url: () => app.url, fetchFn: (input: RequestInfo | URL, init?: RequestInit) => fetch(input, withCsrfHeader(init)) }),
  yoga: serverAudits({ url: 'http://kvql.test/graphql', fetchFn: (input: RequestInfo | URL, init?: RequestInit) => app.yoga.fetch(input as never, withCsrfHeader(init)) }),
};
const audits = paths.listener;
const levelOf = (name: string) => name.split(' ')[0] as AuditRequirement;

describe('graphql-http server audits', () => {
  it('has unique audit ids, and a skip list of known, non-MUST audits', () => {
    const ids = audits.map((a) => a.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(audits.length).toBeGreaterThan(0);
    for (const id of Object.keys(NOT_PASSING)) {
      const audit = audits.find((a) => a.id === id);
      expect(audit, `skip-listed audit ${id} does not exist`).toBeDefined();
      expect(levelOf(audit!.name), `skip-listed audit ${id} is a MUST`).not.toBe('MUST');
    }
  });

  for (const [path, pathAudits] of Object.entries(paths)) for (const audit of pathAudits) {
    const reason = NOT_PASSING[audit.id];
    it(`${path}: ${audit.id} ${audit.name}${reason ? ' (known not to pass)' : ''}`, async () => {
      const result = await audit.fn();
      const detail = result.status === 'ok' ? '' : `${result.status}: ${result.reason}`;
      if (reason) {
        expect(result.status, `${audit.id} now passes: remove it from NOT_PASSING`).not.toBe('ok');
      } else {
        expect(result.status, detail).toBe('ok');
      }
    });
  }
});
