using System.Globalization;
using System.Text;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Continuation;
using GpuExecutor.JobLog;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Workflows;

/// <summary>
/// The admin's view of the checkpoint store: runs and generations, manifests, verification,
/// retention, and seeding or materialising a run by hand (`gpu-executor checkpoints ...`).
/// </summary>
public sealed class CheckpointAdmin(ExecutorConfig config, IObjectStoreOpener stores, TextWriter stdout, CancellationToken cancellationToken)
{
    public async Task ListRunsAsync()
    {
        using var store = stores.Open(config.Checkpoints.StoreOrLocal(config.StateDir));
        var runs = await CheckpointRepository.ListRunsAsync(store, config.Checkpoints.Bucket, config.Checkpoints.Prefix, cancellationToken);
        stdout.WriteLine($"{"RUN",-40} {"LATEST",8} {"COMMITTED (UTC)",-20} {"JOB",10} {"SIZE (MiB)",12}");
        foreach (var run in runs)
        {
            var repository = new CheckpointRepository(store, config.Checkpoints.Bucket, config.Checkpoints.Prefix, run, stdout.WriteLine);
            var latest = await repository.ReadLatestAsync(cancellationToken);
            var manifest = latest is { } generation ? await repository.ReadManifestAsync(generation, cancellationToken) : null;
            stdout.WriteLine($"{run,-40} {latest,8} {manifest?.CommittedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} {manifest?.JobId,10} {manifest?.TotalBytes / 1048576.0,12:0.0}");
        }
    }

    public async Task ListGenerationsAsync(string run)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var bad = await repository.ReadBadGenerationsAsync(cancellationToken);
        await ListGenerationsAsync(repository, bad, await ReadGenerationsAsync(repository, bad));
    }

    /// <summary>
    /// Every generation with a manifest or recorded bad (a bad one whose manifest is gone is still
    /// there: its record is the story), each with its manifest, null where the manifest is what is
    /// bad. A refused manifest of a generation not recorded bad fails the command, as it should.
    /// </summary>
    private async Task<SortedDictionary<long, CheckpointManifest?>> ReadGenerationsAsync(CheckpointRepository repository, IReadOnlyDictionary<long, BadGeneration> bad)
    {
        var manifests = new SortedDictionary<long, CheckpointManifest?>();
        foreach (var generation in (await repository.ListGenerationsAsync(cancellationToken)).Union(bad.Keys))
        {
            manifests[generation] = bad.ContainsKey(generation)
                ? await repository.TryReadManifestAsync(generation, cancellationToken)
                : await repository.ReadManifestAsync(generation, cancellationToken);
        }
        return manifests;
    }

    private async Task ListGenerationsAsync(CheckpointRepository repository, IReadOnlyDictionary<long, BadGeneration> bad, SortedDictionary<long, CheckpointManifest?> manifests)
    {
        var latest = await repository.ReadLatestAsync(cancellationToken);
        stdout.WriteLine($"{"GENERATION",10} {"COMMITTED (UTC)",-20} {"JOB",10} {"HOST",-16} {"FILES",6} {"SIZE (MiB)",12}");
        foreach (var (generation, manifest) in manifests)
        {
            var note = generation == latest ? "  <- LATEST" : generation > latest ? "  (not committed: no LATEST names it)" : "";
            if (bad.TryGetValue(generation, out var badGeneration))
                note += $"  BAD (found by {Printable.Of(badGeneration.FoundBy)} at {badGeneration.FoundAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC): {Printable.Of(badGeneration.Reason)}";
            stdout.WriteLine($"{generation,10} {manifest?.CommittedAt.UtcDateTime,-20:yyyy-MM-dd HH:mm:ss} {manifest?.JobId,10} {Printable.Of(manifest?.Host, 63),-16} {manifest?.Files.Count,6} {manifest?.TotalBytes / 1048576.0,12:0.0}{note}");
        }
        if (await repository.ReadContinuationAsync(cancellationToken) is { } chain)
        {
            stdout.WriteLine(chain.State switch
            {
                ContinuationRecord.Retried => $"continuation: job {chain.FromJob} was retried as job {chain.NextJob}, segment {chain.Segment}, at {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
                ContinuationRecord.Retrying => $"continuation: retrying job {chain.FromJob} as segment {chain.Segment} since {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
                _ => $"continuation: retrying job {chain.FromJob} as segment {chain.Segment} failed at {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC: {chain.Error}",
            });
        }
    }

    /// <summary>
    /// `runs show RUN`: the whole run's story from the store, so it reads the same from any host:
    /// who holds it now, its segments (job, host, when, how each ended and why), its generations
    /// with who committed each, the bad ones restore passed over, and the training time so far.
    /// </summary>
    public async Task ShowRunAsync(string run)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var now = DateTimeOffset.UtcNow;
        var leases = TrainingLease.For(repository, config, _ => { });
        var lease = await leases.ReadAsync(cancellationToken);
        var segments = await repository.ReadSegmentsAsync(cancellationToken);
        var bad = await repository.ReadBadGenerationsAsync(cancellationToken);
        var manifests = await ReadGenerationsAsync(repository, bad);
        stdout.WriteLine($"run {run}");
        stdout.WriteLine(lease switch
        {
            null => "lease: none (no job has taken this run)",
            { ReleasedAt: { } released } => $"lease: free, released by {lease.Holder} at {released.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
            _ when !leases.IsLive(lease, now) => $"lease: expired, last held by {lease.Holder} (container {lease.Container}), unrenewed since {lease.RenewedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
            _ => $"lease: held by {lease.Holder} (container {lease.Container}), renewed {lease.RenewedAt.UtcDateTime:HH:mm:ss} UTC, runs to {lease.ExpiresAt.UtcDateTime:HH:mm:ss} UTC",
        });
        // A segment still training counts up to now, while its job holds the lease; one that never
        // said how it ended (its host died) up to the last generation it committed.
        var live = lease is not null && leases.IsLive(lease, now) ? lease.JobId : (long?)null;
        var lastCommits = manifests.Values.OfType<CheckpointManifest>()
            .GroupBy(manifest => manifest.JobId)
            .ToDictionary(job => job.Key, job => job.Max(manifest => manifest.CommittedAt));
        DateTimeOffset? EndOf(RunSegment segment) =>
            segment.EndedAt ?? (segment.JobId == live ? now : lastCommits.TryGetValue(segment.JobId, out var last) ? last : null);
        var trained = segments.Where(segment => segment.TrainingStartedAt is not null && EndOf(segment) is not null)
            .Select(segment => EndOf(segment)!.Value - segment.TrainingStartedAt!.Value)
            .Aggregate(TimeSpan.Zero, (sum, span) => sum + (span > TimeSpan.Zero ? span : TimeSpan.Zero));
        stdout.WriteLine($"training time so far: {Duration(trained)} in {segments.Count(segment => segment.TrainingStartedAt is not null)} segments");

        stdout.WriteLine();
        stdout.WriteLine($"{"JOB",10} {"HOST",-16} {"TRAINING FROM (UTC)",-19}  {"TO (UTC)",-19}  {"OUTCOME",-14} WHY");
        foreach (var segment in segments)
        {
            var ended = segment.EndedAt?.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? (segment.JobId == live ? "(training)" : "(unknown)");
            // Its commits may be pruned already: then there is no last commit to name.
            var why = segment.EndedAt is not null || segment.JobId == live
                ? segment.Why
                : lastCommits.TryGetValue(segment.JobId, out var lastCommit)
                    ? $"it never said how it ended (its host or runner died); its last commit was at {lastCommit.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC"
                    : "it never said how it ended (its host or runner died); none of its generations is kept";
            stdout.WriteLine($"{segment.JobId,10} {Printable.Of(segment.Host, 63),-16} {segment.TrainingStartedAt?.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "(not started)",-19}  {ended,-19}  {Printable.Of(segment.Outcome, 40),-14} {Printable.Of(why)}");
            var start = segment.AdoptedJob is { } adopted
                ? $"adopted job {adopted}'s running training"
                : segment.RestoredGeneration is { } generation ? $"resumed from generation {generation} ({Printable.Of(segment.RestoredFrom)})" : "started with an empty checkpoint directory";
            stdout.WriteLine($"{"",10} {start}; lease {Printable.Of(segment.Lease)}");
            foreach (var fallback in segment.Fallbacks ?? [])
                stdout.WriteLine($"{"",10} restore fell back past {Printable.Of(fallback)}");
        }

        stdout.WriteLine();
        await ListGenerationsAsync(repository, bad, manifests);
    }

    private static string Duration(TimeSpan span) =>
        span.TotalHours >= 1 ? $"{(int)span.TotalHours} h {span.Minutes:00} min" : span.TotalMinutes >= 1 ? $"{(int)span.TotalMinutes} min {span.Seconds:00} s" : $"{span.TotalSeconds:0} s";

    public async Task ShowAsync(string run, long generation)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var manifest = await repository.ReadManifestAsync(generation, cancellationToken);
        stdout.WriteLine(Encoding.UTF8.GetString(manifest.ToJson()));
    }

    /// <summary>Throws <see cref="FindingsException"/> when the generation has problems, after listing them.</summary>
    public async Task VerifyAsync(string run, long? pinned, bool deep)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var generation = pinned
            ?? await repository.ReadLatestAsync(cancellationToken)
            ?? throw new SystemFailureException($"run '{run}' has no committed generation.");
        var problems = await repository.VerifyAsync(generation, deep, cancellationToken);
        foreach (var problem in problems)
            stdout.WriteLine($"  {problem}");
        stdout.WriteLine(problems.Count == 0 ? $"generation {generation} of '{run}' is complete{(deep ? " and every blob hashes right" : "")}." : $"generation {generation} of '{run}' has {problems.Count} problems.");
        if (problems.Count > 0)
            throw new FindingsException($"generation {generation} of run '{run}' failed verification.");
    }

    public async Task RetainAsync(string run, int? keep, bool orphans)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var result = await repository.ApplyRetentionAsync(keep ?? config.Checkpoints.KeepGenerations, orphans, cancellationToken);
        stdout.WriteLine($"deleted generations [{string.Join(", ", result.DeletedGenerations)}] and {result.DeletedBlobs} blobs ({result.DeletedBytes / 1048576.0:0.0} MiB).");
    }

    /// <summary>Commits a directory as the run's next generation (job 0), as the agent would: to seed a run from an existing checkpoint.</summary>
    public async Task PushAsync(string run, string directory, Func<CommitStep, Task>? afterStep)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var snapshots = Path.Combine(RunDirectories.For(config.StateDir, run).Root, "push-snapshots");
        Directory.CreateDirectory(snapshots);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var snapshot = new CheckpointSnapshotter(Path.GetFullPath(directory), snapshots).Take()
                ?? throw new SystemFailureException($"'{directory}' changed while it was copied; try again once nothing writes to it.");
            var result = await repository.CommitAsync(snapshot, 0, config.Checkpoints.KeepGenerations, afterStep, cancellationToken);
            stdout.WriteLine($"committed generation {result.Generation} of '{run}': {snapshot.Files.Count} files, {result.UploadedBytes} of {result.TotalBytes} bytes uploaded in {clock.Elapsed.TotalSeconds:0.00} s.");
        }
        finally
        {
            Directory.Delete(snapshots, recursive: true);
        }
    }

    /// <summary>Materialises a generation in the run's work directory on this host, as prepare would.</summary>
    public async Task PullAsync(string run, long? generation)
    {
        var (store, repository) = Open(run);
        using var _ = store;
        var directories = RunDirectories.For(config.StateDir, run);
        Directory.CreateDirectory(directories.Root);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var restored = await new CheckpointRestorer(repository, directories, stdout.WriteLine).RestoreAsync(generation, cancellationToken)
            ?? throw new SystemFailureException($"run '{run}' has no committed generation.");
        stdout.WriteLine($"restored generation {restored.Generation} into {directories.Work}: {restored.Files} files, {restored.DownloadedBytes} of {restored.Bytes} bytes downloaded in {clock.Elapsed.TotalSeconds:0.00} s.");
    }

    private (IObjectStore Store, CheckpointRepository Repository) Open(string run)
    {
        if (!CheckpointRequest.IsRunKey(run))
            throw new SystemFailureException($"'{run}' is not a run key.");
        return CheckpointStores.Open(stores, config, run, stdout.WriteLine);
    }
}
