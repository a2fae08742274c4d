using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using GpuExecutor.Clocks;

namespace GpuExecutor.Checkpoints;

/// <summary>Who trains a run now: the holder's host, job and container, and until when.</summary>
public sealed record TrainingLeaseRecord(
    [property: JsonPropertyName("host")] string Host,
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("container")] string Container,
    [property: JsonPropertyName("acquired_at")] DateTimeOffset AcquiredAt,
    [property: JsonPropertyName("renewed_at")] DateTimeOffset RenewedAt,
    [property: JsonPropertyName("expires_at")] DateTimeOffset ExpiresAt)
{
    /// <summary>Set when the holder let go (its agent ended): the next job takes the run at once.</summary>
    [JsonPropertyName("released_at")]
    public DateTimeOffset? ReleasedAt { get; init; }

    public string Holder => $"job {JobId.ToString(CultureInfo.InvariantCulture)} on host {Host}";
}

/// <summary>How the lease stood when a job asked for it.</summary>
public enum LeaseTaken
{
    /// <summary>Nobody held it.</summary>
    Free,

    /// <summary>This job held it already (an earlier attempt of its prepare).</summary>
    AlreadyOurs,

    /// <summary>The holder's agent let go of it.</summary>
    Released,

    /// <summary>The holder stopped renewing it (host lost, agent killed) and it expired.</summary>
    Expired,

    /// <summary>The holder ran on this host, and its container is gone.</summary>
    HolderGoneHere,
}

/// <summary>A taken lease: how it stood, and who held it before.</summary>
public sealed record LeaseAcquisition(LeaseTaken How, TrainingLeaseRecord? Previous, TrainingLeaseRecord Ours);

/// <summary>What a renewal found.</summary>
public enum LeaseRenewal { Held, Lost, StoreUnreachable }

/// <summary>
/// One trainer per run, across every host that shares the store: the run's lease lives beside
/// its LATEST (<c>runs/RUN/LEASE.json</c>). Prepare takes it before restoring, the job's agent
/// renews it while the training lives and releases it when it ends; a job of the run that finds
/// it held and live waits, up to <c>checkpoints.lease_wait_seconds</c>, and says whose it is.
///
/// The store offers no compare-and-swap that every S3 clone honours (s3rver has none), so taking
/// the lease is write, pause, read back: of two hosts writing at once, the later write stands,
/// and both read it after the pause. A holder renews only after reading its own record, so a
/// taker whose read-back shows the holder's record backs off.
///
/// Expiry compares the holder's clock (it wrote <see cref="TrainingLeaseRecord.ExpiresAt"/>)
/// with the reader's, so hosts' clocks must agree to within <paramref name="clockSkew"/>
/// (<c>checkpoints.lease_clock_skew_seconds</c>), which is added to every expiry before another
/// host takes over.
/// </summary>
public sealed class TrainingLease(CheckpointRepository repository, string host, TimeSpan timeToLive, TimeSpan clockSkew, Action<string> log)
{
    public const string RecordName = "LEASE.json";
    private const int LargestRecord = 4096;

    /// <summary>Between writing the lease and reading it back: longer than any holder's read-to-write of a renewal.</summary>
    public static readonly TimeSpan SettleTime = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan LongestPoll = TimeSpan.FromSeconds(5);

    /// <summary>The run's lease as the config sets it: this host's name, the lease's lifetime and the clock-skew tolerance.</summary>
    public static TrainingLease For(CheckpointRepository repository, ExecutorConfig config, Action<string> log) =>
        new(repository, config.HostName, config.Checkpoints.LeaseTimeToLive, config.Checkpoints.LeaseClockSkew, log);

    public TimeSpan TimeToLive => timeToLive;

    /// <summary>This host's name, as it signs the lease.</summary>
    public string Host => host;

    /// <summary>How often the agent renews: four chances before the lease would expire.</summary>
    public TimeSpan RenewEvery => timeToLive / 4;

    public async Task<TrainingLeaseRecord?> ReadAsync(CancellationToken cancellationToken)
    {
        var bytes = await repository.ReadRunRecordAsync(RecordName, LargestRecord, cancellationToken);
        TrainingLeaseRecord? record;
        try
        {
            record = bytes is null ? null : JsonSerializer.Deserialize(bytes, RunRecordJsonContext.Default.TrainingLeaseRecord);
        }
        catch (JsonException)
        {
            record = null;
            bytes = [];
        }
        // Its host and container reach logs and the Docker API: only a record this executor could
        // have written counts; anything else is damage, and a damaged lease must not hold a run.
        if (bytes is not null && (record is null || !HostNames.IsValid(record.Host) || record.Container != JobContainerNames.For(record.JobId, JobContainerNames.JobRole)))
        {
            log($"the lease record of run '{repository.RunKey}' is unreadable; it counts as free");
            return null;
        }
        return record;
    }

    /// <summary>
    /// Takes the run's lease for <paramref name="jobId"/>, waiting up to <paramref name="wait"/>
    /// while another job holds it live. <paramref name="goneFromThisHost"/> says whether a holder
    /// on this host has lost its container, which frees the lease at once. Throws a system failure
    /// naming the holder when the wait runs out.
    /// </summary>
    public async Task<LeaseAcquisition> AcquireAsync(long jobId, string container, Func<TrainingLeaseRecord, Task<bool>> goneFromThisHost, TimeSpan wait, CancellationToken cancellationToken)
    {
        // The wait is this process's (monotonic); the lease's times are shared with other hosts, so wall-clock.
        var giveUpAt = Monotonic.Now + wait;
        var announced = false;
        while (true)
        {
            var current = await ReadAsync(cancellationToken);
            var now = DateTimeOffset.UtcNow;
            LeaseTaken? how = current switch
            {
                null => LeaseTaken.Free,
                _ when IsHeldBy(current, jobId) => LeaseTaken.AlreadyOurs,
                { ReleasedAt: not null } => LeaseTaken.Released,
                _ when !IsLive(current, now) => LeaseTaken.Expired,
                _ when current.Host == host && await goneFromThisHost(current) => LeaseTaken.HolderGoneHere,
                _ => null,
            };
            if (how is { } taken)
            {
                var ours = new TrainingLeaseRecord(host, jobId, container, now, now, now + timeToLive);
                await WriteAsync(ours, cancellationToken);
                if (taken == LeaseTaken.AlreadyOurs)
                    return new LeaseAcquisition(taken, current, ours);
                await Task.Delay(SettleTime, cancellationToken);
                if (await ReadAsync(cancellationToken) is { } standing && IsHeldBy(standing, jobId))
                    return new LeaseAcquisition(taken, current, ours);
                continue; // another job wrote after us: it holds the run now
            }
            var holder = current!;
            if (Monotonic.Now >= giveUpAt)
                throw new SystemFailureException(
                    $"run '{repository.RunKey}' is being trained by {holder.Holder} (container {holder.Container}), whose lease was renewed at {holder.RenewedAt.UtcDateTime:HH:mm:ss} UTC and runs to {holder.ExpiresAt.UtcDateTime:HH:mm:ss} UTC; " +
                    $"this job waited {wait.TotalSeconds:0} s (checkpoints.lease_wait_seconds) so that two trainers never write one run. Retry it once that job has ended, or stop that job.");
            if (!announced)
            {
                log($"run '{repository.RunKey}' is being trained by {holder.Holder} (container {holder.Container}); its lease runs to {holder.ExpiresAt.UtcDateTime:HH:mm:ss} UTC and its agent renews it. Waiting up to {wait.TotalSeconds:0} s for it to end or expire...");
                announced = true;
            }
            var untilExpiry = holder.ExpiresAt + clockSkew - now;
            var pause = new[] { LongestPoll, giveUpAt - Monotonic.Now, untilExpiry }.Where(span => span > TimeSpan.Zero).DefaultIfEmpty(TimeSpan.FromMilliseconds(100)).Min();
            await Task.Delay(pause, cancellationToken);
        }
    }

    /// <summary>Pushes the lease's expiry on, if this job still holds it.</summary>
    public async Task<(LeaseRenewal Outcome, TrainingLeaseRecord? Holder)> RenewAsync(long jobId, string container, CancellationToken cancellationToken)
    {
        try
        {
            var current = await ReadAsync(cancellationToken);
            if (current is not null && !IsHeldBy(current, jobId))
                return (LeaseRenewal.Lost, current);
            var now = DateTimeOffset.UtcNow;
            // A record that vanished (an admin removed it) is taken back: this job still trains.
            var renewed = current is null
                ? new TrainingLeaseRecord(host, jobId, container, now, now, now + timeToLive)
                : current with { RenewedAt = now, ExpiresAt = now + timeToLive, ReleasedAt = null };
            await WriteAsync(renewed, cancellationToken);
            return (LeaseRenewal.Held, renewed);
        }
        catch (ObjectStoreException error)
        {
            log($"the run's lease could not be renewed: {error.Message}");
            return (LeaseRenewal.StoreUnreachable, null);
        }
    }

    /// <summary>Lets go of the lease, if this job still holds it: the run's next job need not wait for it to expire.</summary>
    public async Task ReleaseAsync(long jobId, CancellationToken cancellationToken)
    {
        var current = await ReadAsync(cancellationToken);
        if (current is not null && IsHeldBy(current, jobId))
            await WriteAsync(current with { ReleasedAt = DateTimeOffset.UtcNow }, cancellationToken);
    }

    /// <summary>
    /// Whether the record still holds the run at <paramref name="now"/>: not released, and not
    /// past its expiry plus the clock-skew tolerance.
    /// </summary>
    public bool IsLive(TrainingLeaseRecord record, DateTimeOffset now) => record.ReleasedAt is null && now <= record.ExpiresAt + clockSkew;

    private bool IsHeldBy(TrainingLeaseRecord record, long jobId) => record.Host == host && record.JobId == jobId;

    private Task WriteAsync(TrainingLeaseRecord record, CancellationToken cancellationToken) =>
        repository.WriteRunRecordAsync(RecordName, JsonSerializer.SerializeToUtf8Bytes(record, RunRecordJsonContext.Default.TrainingLeaseRecord), cancellationToken);
}
