using GpuExecutor.Configuration;
using GpuExecutor.Protocol;

namespace GpuExecutor.Containers;

/// <summary>
/// Assembles a job's container in one place: name, image, the stage server as its command, the
/// ledger's labels (GPU UUIDs included), mounts, environment and device requests.
/// </summary>
public static class JobContainerSpec
{
    public static ContainerSpec Build(
        ExecutorConfig config,
        JobIdentity job,
        IReadOnlyList<BindMount> mounts,
        string role,
        string image,
        DateTimeOffset startedAt,
        IReadOnlyList<string> gpuUuids,
        IReadOnlyDictionary<string, string> extraEnvironment,
        IReadOnlyDictionary<string, string>? extraLabels = null)
    {
        var labels = new Dictionary<string, string>(JobLabels.For(job, role, startedAt));
        foreach (var (key, value) in extraLabels ?? new Dictionary<string, string>())
            labels[key] = value;
        if (gpuUuids.Count > 0)
            labels[JobLabels.Gpus] = string.Join(',', gpuUuids);
        var environment = new Dictionary<string, string>
        {
            // Always set: CUDA base images default NVIDIA_VISIBLE_DEVICES to "all", which on a
            // host whose default runtime is nvidia would hand the job every GPU. "void" is none.
            ["NVIDIA_VISIBLE_DEVICES"] = gpuUuids.Count > 0 ? string.Join(',', gpuUuids) : "void",
            ["CUDA_VISIBLE_DEVICES"] = string.Join(',', gpuUuids),
        };
        foreach (var (key, value) in extraEnvironment)
            environment[key] = value;
        return new ContainerSpec(
            JobContainerNames.For(job.JobId, role),
            image,
            StageServer.Command,
            labels,
            mounts,
            environment,
            config.Container,
            WorkingDir: null)
        {
            GpuDeviceIds = config.Gpus.Mode == GpuMode.Nvidia ? gpuUuids : [],
            // A daemon shutting down without live-restore gives the training what a stop from `run` gives it.
            StopTimeout = config.Run.StopGracePeriod,
        };
    }
}
