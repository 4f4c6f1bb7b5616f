import { AllocationWindow } from './allocation-window.js';

describe('AllocationWindow', () => {
  test('a List waits while a call is open, from a GetPreferredAllocation answer to its Allocate, and settleMs after', () => {
    let t = 1000;
    const w = new AllocationWindow(500, 10_000, () => t);
    expect(w.waitMs()).toBe(0);
    const endPreferred = w.begin('GetPreferredAllocation');
    t += 2000;
    expect(w.waitMs()).toBe(500); // open: ask again later
    endPreferred();
    t += 3000;
    expect(w.waitMs()).toBe(500); // its Allocate has not come: the kubelet holds a reservation
    const endAllocate = w.begin('Allocate');
    endAllocate();
    endAllocate(); // twice is once
    t += 200;
    expect(w.waitMs()).toBe(300); // the kubelet records what Allocate answered
    t += 300;
    expect(w.waitMs()).toBe(0);
  });

  test('an Allocate that never comes keeps Lists out for preferredMs only; an Allocate without a GetPreferredAllocation settles', () => {
    let t = 0;
    const w = new AllocationWindow(500, 10_000, () => t);
    w.begin('GetPreferredAllocation')();
    t += 9_999;
    expect(w.waitMs()).toBe(500);
    t += 1;
    expect(w.waitMs()).toBe(0);
    w.begin('Allocate')();
    expect(w.waitMs()).toBe(500);
    t += 500;
    expect(w.waitMs()).toBe(0);
    // Two resources of one pod: two answers, two Allocates.
    w.begin('GetPreferredAllocation')();
    w.begin('GetPreferredAllocation')();
    w.begin('Allocate')();
    t += 600;
    expect(w.waitMs()).toBe(500);
    w.begin('Allocate')();
    t += 500;
    expect(w.waitMs()).toBe(0);
  });

  test('listsDone resolves only once the List in flight (and one started meanwhile) came back', async () => {
    const w = new AllocationWindow(0);
    await w.listsDone(); // none in flight
    let finish!: () => void;
    const first = w.list(() => new Promise<string>((r) => (finish = () => r('a'))));
    let done = false;
    const waiting = w.listsDone().then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    let finish2!: () => void;
    finish();
    expect(await first).toBe('a');
    const second = w.list(() => new Promise<void>((r) => (finish2 = r)));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    finish2();
    await second;
    await waiting;
    expect(done).toBe(true);
  });

  test('a failed List does not keep allocation calls waiting', async () => {
    const w = new AllocationWindow(0);
    await expect(w.list(() => Promise.reject(new Error('UNAVAILABLE')))).rejects.toThrow('UNAVAILABLE');
    await w.listsDone();
  });
});
