using System.Diagnostics;

namespace GpuExecutor.Clocks;

/// <summary>
/// The clock for every wait and grace that one process measures (a stop's grace, a lock's wait,
/// the agent's quiet period and back-off): a monotonic clock, which an NTP step or an admin's
/// `date -s` does not move. With the wall clock, a jump forward would SIGKILL a trainer still
/// saving its checkpoint, and a jump back would stretch a 30 s grace by the jump. Values are
/// comparable only within one process; deadlines shared between processes are
/// <see cref="HostDeadline"/>s.
/// </summary>
public static class Monotonic
{
    /// <summary>Time since an arbitrary start: only differences between two readings mean anything.</summary>
    public static TimeSpan Now => Stopwatch.GetElapsedTime(0);
}
