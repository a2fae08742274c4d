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
                // Docker's init (tini) as PID 1 reaps the orphans that stages leave behind.
                Init = true,
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
