namespace GpuExecutor.Datasets;

/// <summary>
/// A cap on the bytes per second of every fetch that shares it (datasets.stream_max_rate): each
/// chunk read books its share of the time line, and waits until then. Idle time is not saved up
/// beyond one second, so a fetch after a pause bursts for at most a second's worth.
/// </summary>
public sealed class BandwidthLimit(long bytesPerSecond, Func<DateTime>? clock = null)
{
    private static readonly TimeSpan LongestBurst = TimeSpan.FromSeconds(1);
    private readonly Func<DateTime> _now = clock ?? (() => DateTime.UtcNow);
    private readonly Lock _lock = new();
    private DateTime _bookedUntil = DateTime.MinValue;

    /// <summary>Books <paramref name="bytes"/>; returns how long the caller must wait before going on.</summary>
    public TimeSpan Reserve(long bytes)
    {
        lock (_lock)
        {
            var now = _now();
            if (_bookedUntil < now - LongestBurst)
                _bookedUntil = now - LongestBurst;
            _bookedUntil += TimeSpan.FromSeconds((double)bytes / bytesPerSecond);
            return _bookedUntil > now ? _bookedUntil - now : TimeSpan.Zero;
        }
    }

    public async ValueTask WaitAsync(long bytes, CancellationToken cancellationToken)
    {
        var wait = Reserve(bytes);
        if (wait > TimeSpan.Zero)
            await Task.Delay(wait, cancellationToken);
    }
}
