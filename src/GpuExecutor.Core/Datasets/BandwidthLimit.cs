using GpuExecutor.Clocks;

namespace GpuExecutor.Datasets;

/// <summary>
/// A cap on the bytes per second of every fetch that shares it (datasets.stream_max_rate): each
/// chunk read books its share of the time line, and waits until then. Idle time is not saved up
/// beyond one second, so a fetch after a pause bursts for at most a second's worth. The time line
/// is monotonic: with the wall clock, a jump back by an hour would hold every fetch for an hour.
/// </summary>
/// <param name="clock">Time on a monotonic line (<see cref="Monotonic.Now"/> unless a test gives its own).</param>
public sealed class BandwidthLimit(long bytesPerSecond, Func<TimeSpan>? clock = null)
{
    private static readonly TimeSpan LongestBurst = TimeSpan.FromSeconds(1);
    private readonly Func<TimeSpan> _now = clock ?? (() => Monotonic.Now);
    private readonly Lock _lock = new();
    private TimeSpan? _bookedUntil;

    /// <summary>Books <paramref name="bytes"/>; returns how long the caller must wait before going on.</summary>
    public TimeSpan Reserve(long bytes)
    {
        lock (_lock)
        {
            var now = _now();
            var bookedUntil = _bookedUntil is { } booked && booked >= now - LongestBurst ? booked : now - LongestBurst;
            bookedUntil += TimeSpan.FromSeconds((double)bytes / bytesPerSecond);
            _bookedUntil = bookedUntil;
            return bookedUntil > now ? bookedUntil - now : TimeSpan.Zero;
        }
    }

    public async ValueTask WaitAsync(long bytes, CancellationToken cancellationToken)
    {
        var wait = Reserve(bytes);
        if (wait > TimeSpan.Zero)
            await Task.Delay(wait, cancellationToken);
    }
}
