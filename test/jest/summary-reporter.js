// A jest reporter that (1) prints the tails of the control plane's logs when any test failed,
// (2) lists every skipped test with its suite and title (a skipped suite names its reason in its
// title, e.g. "(skipped: needs root)"), and (3) writes the counts to
// $VIO_RESULTS_DIR/jest-summary.json, with the failed tests' names and the first lines of each
// failure, for the closing lines of scripts/test.sh (a CI log cut to its tail still names them).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The first lines of a test's failure, plain text and at most 600 characters: what a CI log cut to
 * its tail needs to reproduce it (a generated test's seed and path, the assertion that failed).
 */
function firstLines(messages) {
  // eslint-disable-next-line no-control-regex
  const text = String(messages?.[0] ?? '').replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at '));
  const why = lines.slice(0, 3).join(' | ');
  return why ? ` — ${why.length > 600 ? `${why.slice(0, 597)}...` : why}` : '';
}

export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const dir = process.env.VIO_RESULTS_DIR;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    if (failed > 0) {
      const candidates = [dir, process.env.VIO_CP_DIR].filter(Boolean).map((d) => join(d, 'control-plane-logs.json'));
      for (const file of candidates) {
        if (!existsSync(file)) continue;
        for (const [name, log] of Object.entries(JSON.parse(readFileSync(file, 'utf8')))) {
          if (!existsSync(log)) continue;
          const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
          console.error(`\n----- last 40 lines of ${name} (${log}) -----\n${lines.slice(-40).join('\n')}`);
        }
        break;
      }
    }
    const skipped = [];
    for (const file of results.testResults) {
      for (const t of file.testResults) {
        if (t.status === 'pending' || t.status === 'skipped' || t.status === 'todo') skipped.push(`${[...t.ancestorTitles, t.title].join(' › ')}  (${file.testFilePath.replace(process.cwd() + '/', '')})`);
      }
    }
    if (skipped.length > 0) console.log(`\nSkipped tests (${skipped.length}):\n${skipped.map((s) => `  - ${s}`).join('\n')}`);
    const failures = [];
    for (const file of results.testResults) {
      const where = file.testFilePath.replace(process.cwd() + '/', '');
      if (file.testExecError) failures.push(`${where}: ${String(file.testExecError.message).split('\n')[0]}`);
      for (const t of file.testResults) if (t.status === 'failed') failures.push(`${where} › ${[...t.ancestorTitles, t.title].join(' › ')}${firstLines(t.failureMessages)}`);
    }
    if (dir) {
      writeFileSync(join(dir, 'jest-summary.json'), JSON.stringify({
        failures,
        passed: results.numPassedTests,
        failed: results.numFailedTests + results.numRuntimeErrorTestSuites,
        skipped: results.numPendingTests + results.numTodoTests,
      }));
    }
  }
}
