using System.Text.Json;
using GpuExecutor.Checkpoints;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Tests;

/// <summary>The run's lease in the store, on the file store: who may train a run, and when another job may take it.</summary>
public sealed class TrainingLeaseTests : IDisposable
{
    private static readonly TimeSpan TimeToLive = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ClockSkew = TimeSpan.FromSeconds(30);
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-lease").FullName;
    private readonly FileObjectStore _store;
    private readonly CheckpointRepository _repository;
    private readonly List<string> _log = [];

    public TrainingLeaseTests()
    {
        _store = new FileObjectStore(_root);
        _repository = new CheckpointRepository(_store, "checkpoints", "", "run-lease", _ => { });
    }

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private TrainingLease On(string host) => new(_repository, host, TimeToLive, ClockSkew, _log.Add);

    private static Task<bool> StillRunning(TrainingLeaseRecord _) => Task.FromResult(false);

    private static Task<bool> Gone(TrainingLeaseRecord _) => Task.FromResult(true);

    private Task PlantAsync(TrainingLeaseRecord record) =>
        _repository.WriteRunRecordAsync(TrainingLease.RecordName, JsonSerializer.SerializeToUtf8Bytes(record, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }), CancellationToken.None);

    [Fact]
    public async Task A_free_run_is_taken_and_its_holder_renews_it()
    {
        var taken = await On("host-a").AcquireAsync(1, "gpu-executor-1-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(LeaseTaken.Free, taken.How);
        Assert.Null(taken.Previous);

        var (outcome, holder) = await On("host-a").RenewAsync(1, "gpu-executor-1-job", CancellationToken.None);
        Assert.Equal(LeaseRenewal.Held, outcome);
        Assert.True(holder!.ExpiresAt >= taken.Ours.ExpiresAt);
        Assert.Equal(taken.Ours.AcquiredAt, holder.AcquiredAt);
    }

    [Fact]
    public async Task A_live_lease_of_another_host_is_waited_for_and_then_the_job_fails_naming_the_holder()
    {
        await On("host-a").AcquireAsync(1, "gpu-executor-1-job", StillRunning, TimeSpan.Zero, CancellationToken.None);

        var refused = await Assert.ThrowsAsync<SystemFailureException>(() => On("host-b").AcquireAsync(2, "gpu-executor-2-job", Gone, TimeSpan.FromSeconds(1), CancellationToken.None));
        Assert.Contains("is being trained by job 1 on host host-a (container gpu-executor-1-job)", refused.Message);
        Assert.Contains("waited 1 s (checkpoints.lease_wait_seconds)", refused.Message);
        Assert.Contains(_log, line => line.Contains("Waiting up to 1 s", StringComparison.Ordinal));
        // The other host's container check does not count: it cannot see host-a's containers.
        Assert.Equal(1, (await On("host-a").ReadAsync(CancellationToken.None))!.JobId);
    }

    [Fact]
    public async Task A_lease_expired_past_the_clock_skew_is_taken_over_and_its_old_holder_finds_it_lost()
    {
        var longAgo = DateTimeOffset.UtcNow - TimeToLive - ClockSkew - TimeSpan.FromSeconds(5);
        await PlantAsync(new TrainingLeaseRecord("host-a", 1, "gpu-executor-1-job", longAgo, longAgo, longAgo + TimeToLive));

        var taken = await On("host-b").AcquireAsync(2, "gpu-executor-2-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(LeaseTaken.Expired, taken.How);
        Assert.Equal("job 1 on host host-a", taken.Previous!.Holder);

        var (outcome, holder) = await On("host-a").RenewAsync(1, "gpu-executor-1-job", CancellationToken.None);
        Assert.Equal(LeaseRenewal.Lost, outcome);
        Assert.Equal("job 2 on host host-b", holder!.Holder);
    }

    [Theory]
    [InlineData("host\u001b[31m-a", "gpu-executor-1-job")]
    [InlineData("host-a", "../../containers/x")]
    [InlineData("host-a", "gpu-executor-2-job")]
    public async Task A_lease_record_this_executor_could_not_have_written_counts_as_free(string host, string container)
    {
        var now = DateTimeOffset.UtcNow;
        await PlantAsync(new TrainingLeaseRecord(host, 1, container, now, now, now + TimeToLive));

        Assert.Null(await On("host-b").ReadAsync(CancellationToken.None));
        var taken = await On("host-b").AcquireAsync(2, "gpu-executor-2-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(LeaseTaken.Free, taken.How);
        Assert.Contains(_log, line => line.Contains("is unreadable; it counts as free", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_lease_expired_but_within_the_clock_skew_still_holds()
    {
        var justExpired = DateTimeOffset.UtcNow - TimeSpan.FromSeconds(5);
        await PlantAsync(new TrainingLeaseRecord("host-a", 1, "gpu-executor-1-job", justExpired - TimeToLive, justExpired - TimeToLive, justExpired));

        await Assert.ThrowsAsync<SystemFailureException>(() => On("host-b").AcquireAsync(2, "gpu-executor-2-job", StillRunning, TimeSpan.Zero, CancellationToken.None));
    }

    [Fact]
    public async Task A_released_lease_and_a_holder_gone_from_this_host_are_taken_at_once()
    {
        await On("host-a").AcquireAsync(1, "gpu-executor-1-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        var stillHere = await Assert.ThrowsAsync<SystemFailureException>(() => On("host-a").AcquireAsync(2, "gpu-executor-2-job", StillRunning, TimeSpan.Zero, CancellationToken.None));
        Assert.Contains("job 1 on host host-a", stillHere.Message);

        var afterGone = await On("host-a").AcquireAsync(2, "gpu-executor-2-job", Gone, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(LeaseTaken.HolderGoneHere, afterGone.How);

        await On("host-a").ReleaseAsync(2, CancellationToken.None);
        // Releasing what another job holds changes nothing.
        await On("host-a").ReleaseAsync(1, CancellationToken.None);
        var afterRelease = await On("host-b").AcquireAsync(3, "gpu-executor-3-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(LeaseTaken.Released, afterRelease.How);
        Assert.Equal(2, afterRelease.Previous!.JobId);
    }

    [Fact]
    public async Task Of_two_hosts_taking_a_free_run_at_once_exactly_one_holds_it()
    {
        var first = On("host-a").AcquireAsync(1, "gpu-executor-1-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        var second = On("host-b").AcquireAsync(2, "gpu-executor-2-job", StillRunning, TimeSpan.Zero, CancellationToken.None);
        var outcomes = await Task.WhenAll(Outcome(first), Outcome(second));

        Assert.Single(outcomes, won => won);
        var holder = await On("host-a").ReadAsync(CancellationToken.None);
        Assert.Equal(outcomes[0] ? 1 : 2, holder!.JobId);
    }

    private static async Task<bool> Outcome(Task<LeaseAcquisition> acquiring)
    {
        try
        {
            await acquiring;
            return true;
        }
        catch (SystemFailureException)
        {
            return false;
        }
    }
}
