using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.Protocol;

namespace GpuExecutor.Checkpoints;

/// <summary>Re-attach: finding a run's training that no runner follows any more.</summary>
public static class Adoption
{
    /// <summary>
    /// The run's training, still running with no `run` following it: its job's runner died
    /// (`run` holds the main-stage lock while it follows, and the kernel frees the lock with the
    /// process). Null unless the record, the free lock, the running container and its run-key
    /// label all agree. The verdict says whether this job may adopt it: only when it asks for the
    /// same image, GPUs, datasets and checkpoint settings as the job that started it.
    /// </summary>
    public static async Task<AdoptionCandidate?> FindTrainingToAdoptAsync(IContainerDriver driver, RunDirectories directories, JobIdentity job, JobDefinition wanted, CancellationToken cancellationToken)
    {
        if (Reattach.ReadMainStage(directories) is not { } record || record.JobId == job.JobId)
            return null;
        using (var free = HostLock.TryAcquire(directories.MainStageLock))
        {
            if (free is null)
                return null;
        }
        if (!await IsRunningAsync(driver, record.Container, cancellationToken))
            return null;
        var owners = await driver.FindAsync(JobLabels.SelectJob(record.JobId), cancellationToken);
        return owners.FirstOrDefault(found => found.Name == record.Container && found.Labels.GetValueOrDefault(JobLabels.RunKey) == job.RunKey) is { } container
            ? new AdoptionCandidate(record, wanted.DifferencesFrom(container.Labels))
            : null;
    }

    /// <summary>Whether the container runs now; one removed since it was found runs nothing.</summary>
    public static async Task<bool> IsRunningAsync(IContainerDriver driver, string container, CancellationToken cancellationToken)
    {
        try
        {
            return await driver.InspectStateAsync(container, cancellationToken) is { Running: true };
        }
        catch (ContainerEngineException)
        {
            return false;
        }
    }
}

/// <summary>Training no runner follows, and how this job's definition differs from it (empty: it may be adopted).</summary>
public sealed record AdoptionCandidate(MainStageRecord Training, IReadOnlyList<string> Differences)
{
    public bool Adoptable => Differences.Count == 0;
}
