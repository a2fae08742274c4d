using System.Globalization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Clocks;

namespace GpuExecutor.Gpus;

/// <summary>
/// Gives a job its own GPUs. Inventory, ledger, choice and the creation of the job's container
/// all happen under one host-wide lock, so two prepares can never pick the same GPU; when too
/// few are free, the job waits, saying in its log what it waits for and who holds the GPUs.
/// </summary>
/// <param name="waitReporting">The job that waits, recorded for the host's metrics (<see cref="GpuWaits"/>), and what rewrites them: when it starts waiting for GPUs, and while it waits.</param>
public sealed class GpuAllocator(IContainerDriver driver, IGpuInventory nvidiaSmi, GpuSettings settings, string stateDir, Action<string> log, (long JobId, Func<Task> Changed)? waitReporting = null)
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan WaitingMessageInterval = TimeSpan.FromSeconds(30);

    public string LockPath => Path.Combine(stateDir, "locks", "gpus.lock");

    private string TopologyCacheDirectory => Path.Combine(stateDir, "gpus");

    /// <summary>
    /// Chooses GPUs and calls <paramref name="createHolder"/> with them while still holding the
    /// lock; the container it creates must carry the GPUs' UUIDs on its labels. Nothing is taken
    /// before <paramref name="mustFinishFirst"/> (the job's datasets) is done, so a job never
    /// holds GPUs while it downloads, yet downloads while it waits for GPUs.
    /// <paramref name="firstInventory"/>, when given, is an nvidia-smi query the caller started
    /// early; it stands for the first look at the GPUs, and later looks ask afresh.
    /// </summary>
    public async Task<IReadOnlyList<GpuDevice>> AllocateAsync(
        GpuRequest request,
        Func<IReadOnlyList<GpuDevice>, GpuTopology, Task> createHolder,
        CancellationToken cancellationToken,
        Task? mustFinishFirst = null,
        Task<IReadOnlyList<GpuDevice>>? firstInventory = null)
    {
        mustFinishFirst ??= Task.CompletedTask;
        if (request.Count == 0)
        {
            await mustFinishFirst;
            await createHolder([], GpuTopology.Unknown);
            return [];
        }

        var waitEnds = Monotonic.Now + settings.WaitTimeout;
        var nextMessage = Monotonic.Now;
        GpuTopology? topology = null;
        // A wait for GPUs (not for the job's own datasets) is on record for the metrics while it lasts.
        using var waiting = waitReporting is { } reporting ? new GpuWaits.Registration(stateDir, reporting.JobId) : null;
        while (true)
        {
            if (mustFinishFirst.IsFaulted || mustFinishFirst.IsCanceled)
                await mustFinishFirst;
            string waitingFor;
            using (await HostLock.AcquireAsync(LockPath, cancellationToken))
            {
                // nvidia-smi (tens of ms on real hosts) and the ledger run side by side; the
                // first inventory may have been started by the caller before the lock, while it
                // did other work. Only the ledger must be read under the lock, and it is.
                var inventoryTask = firstInventory ?? nvidiaSmi.QueryAsync(cancellationToken);
                firstInventory = null;
                var holdersTask = GpuLedger.ReadAsync(driver, cancellationToken);
                var inventory = await inventoryTask;
                var holders = await holdersTask;
                var pool = InPool(settings, inventory);
                GpuPoolRecord.Write(stateDir, pool);
                CheckCanEverBeMet(pool, request);
                var free = pool
                    .Where(request.Admits)
                    .Where(gpu => !holders.ContainsKey(gpu.Uuid) && !IsBusyOutsideJobs(gpu))
                    .ToList();
                if (free.Count >= request.Count && !mustFinishFirst.IsCompleted)
                {
                    // Enough GPUs, but the datasets are still arriving: take nothing yet, and do
                    // not count this against the GPU wait.
                    waitEnds = Monotonic.Now + settings.WaitTimeout;
                    waitingFor = "the GPUs are free; waiting for the datasets to arrive.";
                }
                else if (free.Count >= request.Count)
                {
                    topology ??= request.Count > 1 ? await nvidiaSmi.TopologyAsync(inventory, TopologyCacheDirectory, log, cancellationToken) : GpuTopology.Unknown;
                    var chosen = GpuSelection.Choose(free, request.Count, topology)!;
                    await createHolder(chosen, topology);
                    return chosen;
                }
                else
                {
                    waitingFor = DescribeWait(pool, request, holders, free.Count);
                    if (waiting is { Begun: false })
                    {
                        waiting.Begin(DateTimeOffset.UtcNow);
                        nextMessage = Monotonic.Now;
                    }
                }
            }

            if (Monotonic.Now >= waitEnds)
                // The host is busy, not the job wrong: a system failure, which the runner retries.
                throw new SystemFailureException($"no GPUs freed up within gpus.wait_timeout_seconds ({settings.WaitTimeout.TotalSeconds:0} s). {waitingFor}");
            if (Monotonic.Now >= nextMessage)
            {
                log($"Waiting for {request}: {waitingFor}");
                nextMessage = Monotonic.Now + WaitingMessageInterval;
                if (waiting is { Begun: true })
                    await waitReporting!.Value.Changed();
            }
            await Task.WhenAny(mustFinishFirst.IsCompleted ? Task.Delay(PollInterval, cancellationToken) : mustFinishFirst, Task.Delay(PollInterval, cancellationToken));
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    /// <summary>The host's GPUs this runner may use (gpus.pool, by index or UUID; empty means all).</summary>
    public static IReadOnlyList<GpuDevice> InPool(GpuSettings settings, IReadOnlyList<GpuDevice> inventory) =>
        settings.Pool.Count == 0
            ? inventory
            : inventory.Where(gpu => settings.Pool.Contains(gpu.Uuid) || settings.Pool.Contains(gpu.Index.ToString(CultureInfo.InvariantCulture))).ToList();

    private bool IsBusyOutsideJobs(GpuDevice gpu) => gpu.MemoryUsedMiB > settings.BusyMemoryMiB;

    /// <summary>A request this runner could never meet is the job's build failure, at once, saying why.</summary>
    private static void CheckCanEverBeMet(IReadOnlyList<GpuDevice> pool, GpuRequest request)
    {
        var models = string.Join(", ", pool.GroupBy(gpu => gpu.Name).Select(group => $"{group.Count()} × {group.Key}"));
        if (pool.Count == 0)
            throw new BuildFailureException($"the job asks for {request}, but this runner has no GPUs.");
        if (request.Count > pool.Count)
            throw new BuildFailureException($"the job asks for {request.Count} GPUs, but this runner has {pool.Count} ({models}).");
        if (request.Model is { } model && !pool.Any(gpu => gpu.Name.Contains(model, StringComparison.OrdinalIgnoreCase)))
            throw new BuildFailureException($"the job asks for GPU model '{model}' ({GpuRequest.ModelVariable}), but this runner has only {models}.");
        var matching = pool.Count(request.Admits);
        if (matching < request.Count)
        {
            var largest = pool.Where(gpu => request.Model is null || gpu.Name.Contains(request.Model, StringComparison.OrdinalIgnoreCase)).Max(gpu => gpu.MemoryTotalMiB ?? 0);
            throw new BuildFailureException($"the job asks for {request}, but only {matching} of this runner's GPUs qualify (the largest has {largest} MiB; {models}).");
        }
    }

    private string DescribeWait(IReadOnlyList<GpuDevice> pool, GpuRequest request, IReadOnlyDictionary<string, GpuHolder> holders, int free)
    {
        var reasons = pool.Where(request.Admits).Select(gpu =>
            holders.TryGetValue(gpu.Uuid, out var holder)
                ? $"GPU {gpu.Index} held by job {holder.JobId} (project {holder.ProjectId}){(holder.Since is { } since ? $" since {since:HH:mm:ss}Z" : "")}"
                : IsBusyOutsideJobs(gpu)
                    ? $"GPU {gpu.Index} busy outside any job ({gpu.MemoryUsedMiB} MiB in use, gpus.busy_memory_mib = {settings.BusyMemoryMiB})"
                    : $"GPU {gpu.Index} free");
        return $"{free} of {request.Count} free; {string.Join("; ", reasons)}.";
    }
}
