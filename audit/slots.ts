/** At most `n` holders at once; the others wait in order. */
export class Slots {
  private readonly waiters: Array<() => void> = [];

  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => this.waiters.push(r));
  }

  release() {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}
