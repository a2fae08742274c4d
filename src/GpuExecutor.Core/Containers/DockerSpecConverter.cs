using Docker.DotNet.Models;

namespace GpuExecutor.Containers;

/// <summary>The one place that turns a <see cref="ContainerSpec"/> into Docker's create request.</summary>
public static class DockerSpecConverter
{
    public static CreateContainerParameters ToCreateParameters(ContainerSpec spec)
    {
        var resources = spec.Resources;
        return new CreateContainerParameters
        {
            Name = spec.Name,
            Image = spec.Image,
            Cmd = spec.Command.ToList(),
            // The image's entrypoint would wrap our idle PID 1 (NGC images start a banner script);
            // stages are exec'd, so the entrypoint has no role here.
            Entrypoint = new List<string>(),
            Labels = new Dictionary<string, string>(spec.Labels),
            Env = spec.Environment.Select(pair => $"{pair.Key}={pair.Value}").ToList(),
            WorkingDir = spec.WorkingDir ?? "",
            // The stage server reads its requests from stdin, which must stay open between
            // attaches (StdinOnce = false) for the container's whole life.
            OpenStdin = true,
            StdinOnce = false,
            AttachStdin = false,
            AttachStdout = false,
            AttachStderr = false,
            Tty = false,
            StopTimeout = spec.StopTimeout,
            HostConfig = new HostConfig
            {
                // The stage server itself is PID 1, out of a job's reach: the kernel delivers no
                // signal to a namespace's init that it does not handle, so `kill -9 -1` or
                // `kill -9 1` from a stage cannot end it. bash as PID 1 reaps orphans as tini would
                // (StageServer). Explicit, since a daemon's "init": true would put tini first.
                Init = false,
                Privileged = false,
                // Every capability but the configured ones is dropped (container.capabilities).
                CapDrop = new List<string> { "ALL" },
                CapAdd = resources.Capabilities.ToList(),
                SecurityOpt = resources.NoNewPrivileges ? new List<string> { "no-new-privileges:true" } : new List<string>(),
                // Stage output also lands in the container's log; rotation keeps a training run
                // that prints for days from filling the host's disk.
                LogConfig = new LogConfig
                {
                    Type = "json-file",
                    Config = new Dictionary<string, string> { ["max-size"] = "64m", ["max-file"] = "2" },
                },
                // Structured mounts, not "src:dst" strings: a path with ':' or ',' cannot change meaning.
                Mounts = spec.Mounts
                    .Select(mount => new Mount
                    {
                        Type = "bind",
                        Source = mount.HostPath,
                        Target = mount.ContainerPath,
                        ReadOnly = mount.ReadOnly,
                    })
                    .ToList(),
                ShmSize = resources.ShmSizeBytes ?? 0,
                IpcMode = resources.IpcMode ?? "",
                NetworkMode = resources.NetworkMode ?? "",
                NanoCPUs = resources.Cpus is { } cpus ? (long)Math.Round(cpus * 1e9) : 0,
                Memory = resources.MemoryBytes ?? 0,
                // Docker reads 0 as "keep the daemon's default"; -1 is no limit.
                PidsLimit = resources.PidsLimit ?? -1,
                DeviceRequests = spec.GpuDeviceIds.Count == 0
                    ? new List<DeviceRequest>()
                    : new List<DeviceRequest>
                    {
                        new()
                        {
                            Driver = "nvidia",
                            DeviceIDs = spec.GpuDeviceIds.ToList(),
                            Capabilities = new List<IList<string>> { new List<string> { "gpu" } },
                        },
                    },
                Ulimits = resources.Ulimits.Select(limit => new Docker.DotNet.Models.Ulimit
                {
                    Name = limit.Name,
                    Soft = limit.Soft,
                    Hard = limit.Hard,
                }).ToList(),
            },
        };
    }
}
